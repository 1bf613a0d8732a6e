"""The schema built by the Alembic migrations equals ``metadata.create_all()``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from errands.store import migrations
from errands.store.schema import metadata


def _describe(url: str) -> dict[str, Any]:
    engine = create_engine(url)
    try:
        insp = inspect(engine)
        tables = sorted(t for t in insp.get_table_names() if t.startswith("errands_"))
        tables = [t for t in tables if t != migrations.VERSION_TABLE]
        out: dict[str, Any] = {}
        for t in tables:
            out[t] = {
                "columns": [
                    (c["name"], str(c["type"]), c["nullable"], str(c.get("default")))
                    for c in insp.get_columns(t)
                ],
                "pk": insp.get_pk_constraint(t)["constrained_columns"],
                "indexes": sorted(
                    (i["name"], tuple(str(c) for c in i["column_names"]), bool(i["unique"]))
                    for i in insp.get_indexes(t)
                ),
            }
        with engine.connect() as conn:
            out["table_sql"] = sorted(
                " ".join(r[0].split())
                for r in conn.exec_driver_sql(
                    "SELECT sql FROM sqlite_master WHERE type = 'table' "
                    "AND name LIKE 'errands_%' AND name != 'errands_alembic_version'"
                )
            )
            out["index_sql"] = sorted(
                " ".join(r[0].split())
                for r in conn.exec_driver_sql(
                    "SELECT sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
                    "AND tbl_name LIKE 'errands_%'"
                )
            )
        return out
    finally:
        engine.dispose()


def _plain_objects(obj: Any, name: Any, type_: str, reflected: bool, compare_to: Any) -> bool:
    if type_ != "index":
        return True
    return all(hasattr(e, "name") for e in getattr(obj, "expressions", []))


def test_migrations_equal_metadata(tmp_path: Path) -> None:
    migrated = f"sqlite:///{tmp_path / 'migrated.db'}"
    created = f"sqlite:///{tmp_path / 'created.db'}"
    engine = create_engine(migrated)
    migrations.upgrade(engine)
    with engine.connect() as conn:
        ctx = MigrationContext.configure(
            conn,
            opts={"version_table": migrations.VERSION_TABLE, "include_object": _plain_objects},
        )
        assert ctx.get_current_revision() == migrations.head_revision()
        # Alembic's own comparison: nothing to autogenerate. (Alembic cannot compare
        # expression indexes such as "priority DESC"; the CREATE INDEX statements are
        # compared verbatim below.)
        assert compare_metadata(ctx, metadata) == []
    engine.dispose()

    engine = create_engine(created)
    metadata.create_all(engine)
    engine.dispose()

    assert _describe(migrated) == _describe(created)


def test_upgrade_is_idempotent_and_downgrade_removes_everything(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    engine = create_engine(url)
    migrations.upgrade(engine)
    migrations.upgrade(engine)  # already at head: nothing to do
    assert migrations.is_current(engine)

    from alembic import command

    cfg = migrations.alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "base")
    names = set(inspect(engine).get_table_names())
    assert not {"errands_task", "errands_job", "errands_output"} & names
    engine.dispose()


def test_sqlite_migrates_itself_on_first_use(tmp_path: Path) -> None:
    from errands import Errands

    app = Errands(f"sqlite:///{tmp_path / 'fresh.db'}")
    try:
        page = app.sync.list(owner="nobody")
        assert page.items == [] and page.next_cursor is None
        assert migrations.is_current(app.db.engine)
    finally:
        app.close()


def test_orm_mapping_reads_records(tmp_path: Path) -> None:
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    from errands import Errands, TaskContext
    from errands.store.orm import TaskRow

    app = Errands(f"sqlite:///{tmp_path / 'orm.db'}")

    @app.task
    def noop(ctx: TaskContext, payload: dict[str, Any]) -> None:
        return None

    try:
        rec = app.sync.submit("noop", {"a": 1}, owner="alice")
        app.sync.submit("noop", {}, owner="bob")
        with Session(app.db.engine) as session:
            # TaskRow's columns are mapped from its table: mypy does not see them.
            owner = TaskRow.owner  # type: ignore[attr-defined]
            rows = session.scalars(select(TaskRow).where(owner == "alice")).all()
        assert [(r.id, r.status, r.payload) for r in rows] == [(rec.id, "queued", {"a": 1})]
    finally:
        app.close()
