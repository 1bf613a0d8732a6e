"""Large results and output items go to the blob store, on both databases: read back
transparently (Python API, HTTP API), the rows stay small, and the blobs go with their
record (delete, purge)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text, update

from errands import ANY_OWNER, Errands, Status, TaskContext
from errands.blobs import LocalBlobStore
from errands.errors import ConfigurationError, TaskNotFound
from errands.store.schema import output_table, task_table
from tests.apps.web import make_api

pytestmark = pytest.mark.databases("sqlite", "postgresql")

MB = 1024 * 1024


def row_sizes(app: Errands, task_id: str) -> tuple[int, int]:
    """(bytes of the record's row, bytes of its output rows) as the database stores them."""
    with app.db.engine.connect() as conn:
        if app.db.dialect == "postgresql":
            task = "SELECT pg_column_size(t.*) FROM errands_task t WHERE id = :id"
            out = (
                "SELECT coalesce(sum(pg_column_size(o.*)), 0) FROM errands_output o "
                "WHERE task_id = :id"
            )
        else:
            total = " + ".join(f"coalesce(length({c.name}), 0)" for c in task_table.c)
            task = f"SELECT {total} FROM errands_task WHERE id = :id"
            out = (
                "SELECT coalesce(sum(length(data) + coalesce(length(ref), 0)), 0) "
                "FROM errands_output WHERE task_id = :id"
            )
        return (
            int(conn.execute(text(task), {"id": task_id}).scalar_one()),
            int(conn.execute(text(out), {"id": task_id}).scalar_one()),
        )


def blob_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


@pytest.fixture
def blob_app(db_url: str, tmp_path: Path) -> Any:
    app = Errands(db_url, blob_store=tmp_path / "blobs")
    yield app
    app.close()


async def test_a_20_mb_result_round_trips(
    blob_app: Errands, run_worker: Any, tmp_path: Path
) -> None:
    app = blob_app
    big = {"rows": ["x" * 1024 + str(i) for i in range(20 * 1024)]}  # 20 MB of JSON and more

    @app.task
    async def export(ctx: TaskContext, payload: dict[str, Any]) -> Any:
        ctx.emit({"small": 1})
        if not payload.get("big"):
            return {"rows": 1}
        ctx.emit({"large": "y" * 200_000})
        return big

    app.db.ensure_schema()
    large = await app.submit("export", {"big": True}, owner="alice")
    small = await app.submit("export", {}, owner="alice")
    async with run_worker(app):
        done = await app.wait(large.id, owner="alice", timeout=60)
        await app.wait(small.id, owner="alice", timeout=60)
    assert done.status is Status.SUCCEEDED
    assert done.result == big
    # The row keeps the key only; the item rows too.
    task_bytes, output_bytes = row_sizes(app, large.id)
    assert task_bytes < 2_000 and output_bytes < 2_000, (task_bytes, output_bytes)
    files = blob_files(tmp_path / "blobs")
    assert [f.name for f in files] == ["output-2-0", "result-1-0"]
    assert sum(f.stat().st_size for f in files) > 20 * MB
    # Every read path gives the values back: one record, many, a page, the items.
    assert (await app.get_many([large.id], owner="alice"))[0].result == big
    page = await app.list(owner="alice")
    assert [r.result for r in page.items] == [{"rows": 1}, big]
    items = await app.outputs(large.id, owner="alice")
    assert items == [(1, {"small": 1}), (2, {"large": "y" * 200_000})]
    assert app.sync.get(large.id, owner="alice").result == big
    # Someone else's task stays missing, blobs or not.
    with pytest.raises(TaskNotFound):
        await app.get(large.id, owner="bob")
    # Over HTTP (the resource and the output endpoint).
    transport = httpx.ASGITransport(app=make_api(app, submit_rate=None))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        got = await client.get(f"/api/tasks/{large.id}", headers={"X-User": "alice"})
        assert got.status_code == 200 and got.json()["result"] == big
        out = await client.get(f"/api/tasks/{large.id}/output", headers={"X-User": "alice"})
        assert out.status_code == 200
        assert [i["data"] for i in out.json()["items"]] == [{"small": 1}, {"large": "y" * 200_000}]
    # Deleting the record removes its blobs; the small task had none.
    await app.delete(large.id, owner="alice")
    assert blob_files(tmp_path / "blobs") == []


async def test_purge_removes_the_blobs_of_expired_records(
    blob_app: Errands, run_worker: Any, tmp_path: Path
) -> None:
    app = blob_app

    @app.task
    async def report(ctx: TaskContext, payload: dict[str, Any]) -> Any:
        if payload["n"] % 2:
            ctx.emit("z" * 100_000)
        return "r" * (100_000 if payload["n"] < 2 else 10)

    app.db.ensure_schema()
    records = await app.submit_many("report", [{"n": n} for n in range(4)], owner="alice")
    async with run_worker(app):
        for r in records:
            await app.wait(r.id, owner="alice", timeout=30)
    # n=0: result blob; n=1: result and item; n=2: nothing; n=3: an item only.
    assert len(blob_files(tmp_path / "blobs")) == 4
    expired = [records[0].id, records[1].id, records[3].id]
    with app.db.engine.begin() as conn:
        conn.execute(
            update(task_table)
            .where(task_table.c.id.in_(expired))
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    assert await app.purge(batch=2) == 3
    assert blob_files(tmp_path / "blobs") == []
    kept = await app.list(owner=ANY_OWNER)
    assert [r.id for r in kept.items] == [records[2].id]
    with app.db.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(output_table)).scalar_one() == 0


class MemoryBlobs:
    """Another BlobStore: the app uses whatever implements the three methods."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def put(self, key: str, data: bytes) -> None:
        self.data[key] = data

    def get(self, key: str) -> bytes:
        return self.data[key]

    def delete_tasks(self, task_ids: Any) -> None:
        for task_id in list(task_ids):
            for key in [k for k in self.data if k.startswith(task_id + "/")]:
                del self.data[key]


async def test_a_custom_store_and_threshold(db_url: str, run_worker: Any) -> None:
    store = MemoryBlobs()
    app = Errands(db_url, blob_store=store, blob_threshold=100)
    try:

        @app.task
        async def echo(ctx: TaskContext, payload: dict[str, Any]) -> Any:
            await asyncio.sleep(0)
            return payload

        app.db.ensure_schema()
        long = await app.submit("echo", {"text": "a" * 200}, owner="alice")
        short = await app.submit("echo", {"text": "a"}, owner="alice")
        async with run_worker(app):
            assert (await app.wait(long.id, owner="alice", timeout=30)).result == {
                "text": "a" * 200
            }
            assert (await app.wait(short.id, owner="alice", timeout=30)).result == {"text": "a"}
        assert list(store.data) == [f"{long.id}/result-1-0"]
        app.sync.delete(long.id, owner="alice")
        assert store.data == {}
    finally:
        app.close()
    with pytest.raises(ConfigurationError):
        Errands(db_url, blob_threshold="big")  # type: ignore[arg-type]


def test_local_store_keys(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    store.put("0123-ab/result-1", b"{}")
    assert store.get("0123-ab/result-1") == b"{}"
    assert (tmp_path / "ab" / "0123-ab" / "result-1").read_bytes() == b"{}"
    with pytest.raises(KeyError):
        store.get("0123-ab/result-2")
    for bad in ("../x/result-1", "0123-ab/../../etc", "0123-ab", "0123-ab/.hidden", "/result-1"):
        with pytest.raises(ValueError):
            store.put(bad, b"x")
    store.delete_tasks(["0123-ab", "missing-task"])
    assert blob_files(tmp_path) == []


def test_default_store_sits_beside_the_sqlite_file(tmp_path: Path) -> None:
    app = Errands(f"sqlite:///{tmp_path / 'app.db'}")
    try:
        store = app.blobs.store
        assert isinstance(store, LocalBlobStore)
        assert store.root == (tmp_path / "app.db-blobs").resolve()
    finally:
        app.close()
