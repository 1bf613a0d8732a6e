"""Idempotency keys and unique tasks: three columns and two partial unique indexes.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_ACTIVE_UNIQUE = "unique_key IS NOT NULL AND status IN ('queued', 'running')"


def upgrade() -> None:
    with op.batch_alter_table("errands_task") as batch:
        batch.add_column(sa.Column("idempotency_key", sa.String(255)))
        batch.add_column(sa.Column("request_hash", sa.String(64)))
        batch.add_column(sa.Column("unique_key", sa.String(64)))
    op.create_index(
        "ux_errands_task_idempotency",
        "errands_task",
        ["owner", "idempotency_key"],
        unique=True,
        sqlite_where=sa.text("idempotency_key IS NOT NULL"),
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    )
    op.create_index(
        "ux_errands_task_unique",
        "errands_task",
        ["owner", "unique_key"],
        unique=True,
        sqlite_where=sa.text(_ACTIVE_UNIQUE),
        postgresql_where=sa.text(_ACTIVE_UNIQUE),
    )


def downgrade() -> None:
    op.drop_index("ux_errands_task_unique", table_name="errands_task")
    op.drop_index("ux_errands_task_idempotency", table_name="errands_task")
    with op.batch_alter_table("errands_task") as batch:
        batch.drop_column("unique_key")
        batch.drop_column("request_hash")
        batch.drop_column("idempotency_key")
