"""Attempts with clear edges: each task's output floor (the items of its current attempt
have greater sequence numbers; earlier attempts' items are kept but hidden), and each
worker's process identity (so a worker on the same host can tell that it died).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "errands_task",
        sa.Column("output_floor", sa.Integer, nullable=False, server_default=sa.text("0")),
    )
    op.add_column("errands_worker", sa.Column("process_key", sa.String(160)))


def downgrade() -> None:
    with op.batch_alter_table("errands_worker") as batch:
        batch.drop_column("process_key")
    with op.batch_alter_table("errands_task") as batch:
        batch.drop_column("output_floor")
