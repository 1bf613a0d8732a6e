"""Groups: a part's group and place, and a group record's size, progress count and
``then`` task.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def _where(condition: str) -> dict[str, Any]:
    return {"sqlite_where": sa.text(condition), "postgresql_where": sa.text(condition)}


def upgrade() -> None:
    op.add_column("errands_task", sa.Column("parent_id", sa.String(36)))
    op.add_column("errands_task", sa.Column("group_index", sa.Integer))
    op.add_column("errands_task", sa.Column("group_size", sa.Integer))
    op.add_column("errands_task", sa.Column("group_done", sa.Integer))
    op.add_column("errands_task", sa.Column("group_then", sa.String(255)))
    op.create_index(
        "ix_errands_task_parent",
        "errands_task",
        ["parent_id", "group_index"],
        **_where("parent_id IS NOT NULL"),
    )
    op.create_index(
        "ix_errands_task_parent_running",
        "errands_task",
        ["parent_id"],
        **_where("parent_id IS NOT NULL AND status = 'running'"),
    )


def downgrade() -> None:
    op.drop_index("ix_errands_task_parent_running", table_name="errands_task")
    op.drop_index("ix_errands_task_parent", table_name="errands_task")
    with op.batch_alter_table("errands_task") as batch:
        for column in ("group_then", "group_done", "group_size", "group_index", "parent_id"):
            batch.drop_column(column)
