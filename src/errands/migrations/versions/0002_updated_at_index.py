"""An index on errands_task.updated_at, for the live views' change poll.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_errands_task_updated_at", "errands_task", ["updated_at"])


def downgrade() -> None:
    op.drop_index("ix_errands_task_updated_at", table_name="errands_task")
