"""The task record, job and output tables.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from errands.store.schema import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "errands_task",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("progress_current", sa.Float()),
        sa.Column("progress_total", sa.Float()),
        sa.Column("progress_message", sa.Text()),
        sa.Column("result", sa.JSON()),
        sa.Column("error_type", sa.String(255)),
        sa.Column("error_message", sa.Text()),
        sa.Column("error_detail", sa.Text()),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("run_at", UTCDateTime(), nullable=False),
        sa.Column(
            "cancel_requested", sa.Boolean(), nullable=False, server_default=sa.text("false")
        ),
        sa.Column("version", sa.Integer(), nullable=False, server_default=sa.text("1")),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("started_at", UTCDateTime()),
        sa.Column("finished_at", UTCDateTime()),
        sa.Column("expires_at", UTCDateTime()),
    )
    op.create_index("ix_errands_task_owner_id", "errands_task", ["owner", "id"])
    op.create_index("ix_errands_task_status_id", "errands_task", ["status", "id"])
    op.create_index(
        "ix_errands_task_expires_at",
        "errands_task",
        ["expires_at"],
        sqlite_where=sa.text("expires_at IS NOT NULL"),
        postgresql_where=sa.text("expires_at IS NOT NULL"),
    )

    op.create_table(
        "errands_job",
        sa.Column("task_id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("run_at", sa.Float(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("lease_owner", sa.String(64)),
        sa.Column("lease_expires_at", sa.Float()),
        sqlite_with_rowid=False,
    )
    op.create_index(
        "ix_errands_job_available",
        "errands_job",
        [sa.text("priority DESC"), "run_at"],
        sqlite_where=sa.text("lease_owner IS NULL"),
        postgresql_where=sa.text("lease_owner IS NULL"),
    )
    op.create_index(
        "ix_errands_job_lease",
        "errands_job",
        ["lease_expires_at"],
        sqlite_where=sa.text("lease_owner IS NOT NULL"),
        postgresql_where=sa.text("lease_owner IS NOT NULL"),
    )

    op.create_table(
        "errands_output",
        sa.Column("task_id", sa.String(36), primary_key=True),
        sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("errands_output")
    op.drop_index("ix_errands_job_lease", table_name="errands_job")
    op.drop_index("ix_errands_job_available", table_name="errands_job")
    op.drop_table("errands_job")
    op.drop_index("ix_errands_task_expires_at", table_name="errands_task")
    op.drop_index("ix_errands_task_status_id", table_name="errands_task")
    op.drop_index("ix_errands_task_owner_id", table_name="errands_task")
    op.drop_table("errands_task")
