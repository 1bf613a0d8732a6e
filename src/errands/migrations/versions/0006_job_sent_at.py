"""Engines that hand jobs to a broker (Celery): when a job was last published.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("errands_job", sa.Column("sent_at", sa.Float))


def downgrade() -> None:
    with op.batch_alter_table("errands_job") as batch:
        batch.drop_column("sent_at")
