"""Fair claims and large values: each job's turn (with the indexes that assign and
order turns), and references to values kept in the blob store.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_WAITING = sa.text("lease_owner IS NULL")


def upgrade() -> None:
    op.add_column(
        "errands_job",
        sa.Column("turn", sa.BigInteger, nullable=False, server_default=sa.text("0")),
    )
    op.drop_index("ix_errands_job_available", table_name="errands_job")
    op.create_index(
        "ix_errands_job_available",
        "errands_job",
        [sa.text("priority DESC"), "turn", "run_at"],
        sqlite_where=_WAITING,
        postgresql_where=_WAITING,
    )
    op.create_index(
        "ix_errands_job_owner_turn",
        "errands_job",
        ["owner", "name", "turn"],
        sqlite_where=_WAITING,
        postgresql_where=_WAITING,
    )
    op.create_index(
        "ix_errands_job_waiting_turn",
        "errands_job",
        ["name", "turn"],
        sqlite_where=_WAITING,
        postgresql_where=_WAITING,
    )
    op.add_column("errands_task", sa.Column("result_ref", sa.String(255)))
    op.add_column("errands_output", sa.Column("ref", sa.String(255)))


def downgrade() -> None:
    with op.batch_alter_table("errands_output") as batch:
        batch.drop_column("ref")
    with op.batch_alter_table("errands_task") as batch:
        batch.drop_column("result_ref")
    for name in (
        "ix_errands_job_waiting_turn",
        "ix_errands_job_owner_turn",
        "ix_errands_job_available",
    ):
        op.drop_index(name, table_name="errands_job")
    op.create_index(
        "ix_errands_job_available",
        "errands_job",
        [sa.text("priority DESC"), "run_at"],
        sqlite_where=_WAITING,
        postgresql_where=_WAITING,
    )
    with op.batch_alter_table("errands_job") as batch:
        batch.drop_column("turn")
