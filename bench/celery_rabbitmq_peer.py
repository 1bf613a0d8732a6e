"""Plain Celery on RabbitMQ, measured by the peers' own harness and Celery module.

The peers' ``celery_bench.py`` (a Redis broker and a Redis result backend) is neither
changed nor copied: this script imports it after setting Celery's own
``CELERY_BROKER_URL``, which takes precedence over the broker an app is given in code —
here and in the workers, which inherit the environment — and runs the peers' driver
with its ``Adapter`` under the name ``celery-rabbitmq``. Everything else is the peer's:
the tasks, the ``celery worker -P prefork -c 2`` command, the Redis result backend
(db 1) and start probe (db 15), the reset (Redis ``FLUSHALL``). Added: the RabbitMQ
queue ``bench`` (durable, so it outlives a run, unlike Redis's flushed lists) is
deleted before and after each run, so no message of an earlier run can leak in.

Run it with the peers' interpreter, for a writable copy of the peers' directory (its
``results/raw/``, where ``aggregate.py`` finds the run; worker logs in its ``.state/``),
after ``run_all.sh`` (which empties ``results/raw``):

    cp -r ../shared/bench/peers /tmp/peers
    REPEATS=3 ONLY="celery" bash /tmp/peers/run_all.sh    # plain Celery on Redis (+ venv)
    for rep in 1 2 3; do
      /tmp/peers/.venv/bin/python bench/celery_rabbitmq_peer.py \\
          --out /tmp/peers/results/raw/celery-rabbitmq.run$rep.json
    done
    (cd /tmp/peers && .venv/bin/python aggregate.py results/raw)   # results.json, both

The peers' directory: ``$BENCH_PEERS_DIR``, else the one whose ``.venv`` runs this
script. The broker: ``$BENCH_RABBITMQ_URL`` (default
``amqp://guest:guest@127.0.0.1:5672//``). Options: those of the peers' driver
(``--out``, ``--workloads``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench import _celery  # noqa: E402  (kombu only, no errands)


def _peers_dir() -> Path:
    given = os.environ.get("BENCH_PEERS_DIR")
    where = Path(given) if given else Path(sys.executable).parent.parent.parent
    if not (where / "celery_bench.py").is_file():
        raise SystemExit(
            f"no celery_bench.py in {where}: run this with the interpreter of a copy of the "
            "peers' directory (/tmp/peers/.venv/bin/python), or set BENCH_PEERS_DIR"
        )
    return where.resolve()


PEERS = _peers_dir()
BROKER = _celery.RABBITMQ_URL
QUEUE = "bench"  # celery_bench's task_default_queue
os.environ["CELERY_BROKER_URL"] = BROKER  # read by Celery at connection time; inherited
for name in _celery.CELERY_OVERRIDES[1:]:
    os.environ.pop(name, None)
sys.path.insert(0, str(PEERS))

import celery_bench  # noqa: E402
import common  # noqa: E402

with celery_bench.app.connection_for_write() as _conn:  # did Celery take the override?
    if not _conn.as_uri().startswith("amqp"):
        raise SystemExit(f"celery_bench publishes to {_conn.as_uri()}, not to RabbitMQ")


class Adapter(celery_bench.Adapter):  # type: ignore[misc, name-defined]
    variant = "rabbitmq"  # aggregate.py's name: celery-rabbitmq
    packages = (*celery_bench.Adapter.packages, "amqp")
    config: dict[str, Any] = {
        **celery_bench.Adapter.config,
        "broker": f"RabbitMQ {_celery.safe(BROKER)} (CELERY_BROKER_URL over the peer's "
        "celery_bench.py), queue 'bench' deleted before and after the run",
    }

    def reset(self) -> None:
        super().reset()
        _celery.delete_queues(BROKER, [QUEUE])

    def close(self) -> None:
        super().close()
        _celery.delete_queues(BROKER, [QUEUE])


if __name__ == "__main__":
    sys.exit(common.main(Adapter()))
