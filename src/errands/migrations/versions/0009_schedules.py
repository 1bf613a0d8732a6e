"""Schedules: the ``errands_schedule`` table; on each task the schedule and tick that
created it (one task per tick: a unique index); on each worker the schedules its code
declares.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

from errands.store.schema import UTCDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def _where(condition: str) -> dict[str, Any]:
    return {"sqlite_where": sa.text(condition), "postgresql_where": sa.text(condition)}


def upgrade() -> None:
    op.create_table(
        "errands_schedule",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("cron", sa.String(255)),
        sa.Column("every_seconds", sa.Float),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("paused", sa.Boolean, nullable=False, server_default=sa.text("false")),
        sa.Column("next_run_at", sa.Float),
        sa.Column("last_task_id", sa.String(36)),
        sa.Column("last_run_at", UTCDateTime()),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("code_key", sa.String(255)),
        sa.Column("definition", sa.String(64)),
    )
    op.create_index("ix_errands_schedule_owner_id", "errands_schedule", ["owner", "id"])
    op.create_index(
        "ix_errands_schedule_due", "errands_schedule", ["next_run_at"], **_where("NOT paused")
    )
    op.create_index(
        "ux_errands_schedule_code",
        "errands_schedule",
        ["code_key"],
        unique=True,
        **_where("code_key IS NOT NULL"),
    )
    op.add_column("errands_worker", sa.Column("schedules", sa.JSON))
    op.add_column("errands_task", sa.Column("schedule_id", sa.String(36)))
    op.add_column("errands_task", sa.Column("scheduled_for", UTCDateTime()))
    op.create_index(
        "ux_errands_task_tick",
        "errands_task",
        ["schedule_id", "scheduled_for"],
        unique=True,
        **_where("schedule_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ux_errands_task_tick", table_name="errands_task")
    with op.batch_alter_table("errands_task") as batch:
        batch.drop_column("scheduled_for")
        batch.drop_column("schedule_id")
    with op.batch_alter_table("errands_worker") as batch:
        batch.drop_column("schedules")
    op.drop_table("errands_schedule")
