"""PostgreSQL: one submitted task as one call of a server-side function,
``errands_submit_one``.

The single submit's statement (the record, its job with its turn, and the carried
notifications) costs PostgreSQL more to parse and plan than to run: about 0.2 ms of
0.45 ms on a connection that does not prepare statements, which is every Django
connection by default (Django turns preparing off so that connection poolers keep
working). A PL/pgSQL function's statements are planned once per session and reused, on
any connection and behind any pooler; the call itself is trivial to plan. The
notifications to send travel as one JSON array of [channel, payload] pairs. The function
keeps the driver's rules (``store/postgres.py``): the job's turn continues after the
owner's last waiting turn of the task name, no earlier than the name's frontier. A
change to those rules or to these columns replaces the function in a new migration.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_CREATE = """
CREATE OR REPLACE FUNCTION errands_submit_one(
    p_id text, p_owner text, p_name text, p_payload json, p_max_attempts integer,
    p_priority integer, p_run_stamp timestamptz, p_created_at timestamptz,
    p_run_at double precision, p_notes json
) RETURNS void LANGUAGE plpgsql AS $fn$
BEGIN
    INSERT INTO errands_task (id, owner, name, payload, status, attempts, max_attempts,
        priority, run_at, cancel_requested, version, created_at, updated_at)
    VALUES (p_id, p_owner, p_name, p_payload, 'queued', 0, p_max_attempts, p_priority,
        p_run_stamp, false, 1, p_created_at, p_created_at);
    INSERT INTO errands_job (task_id, name, owner, priority, run_at, turn)
    VALUES (p_id, p_name, p_owner, p_priority, p_run_at, greatest(
        (SELECT j.turn FROM errands_job j WHERE j.lease_owner IS NULL
            AND j.owner = p_owner AND j.name = p_name ORDER BY j.turn DESC LIMIT 1) + 1,
        (SELECT j.turn FROM errands_job j WHERE j.lease_owner IS NULL
            AND j.name = p_name ORDER BY j.turn LIMIT 1),
        0));
    PERFORM pg_notify(n ->> 0, n ->> 1) FROM json_array_elements(p_notes) AS n;
END
$fn$
"""

_DROP = (
    "DROP FUNCTION IF EXISTS errands_submit_one(text, text, text, json, integer, integer, "
    "timestamptz, timestamptz, double precision, json)"
)


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_CREATE)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_DROP)
