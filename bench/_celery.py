"""The brokers of the benchmark's Celery-engine configurations: URLs, queues, cleanup.

``$BENCH_ERRANDS_ENGINE`` names the engine errands runs on: ``sql`` (the default),
``celery-redis`` or ``celery-rabbitmq``. The Celery ones use

- Redis: the peers' Redis (``common.REDIS_URL``, ``$BENCH_REDIS_URL``), database 0 —
  the broker database of the peers' plain Celery (its results go to database 1, the
  start probe to 15);
- RabbitMQ: ``$BENCH_RABBITMQ_URL`` (default ``amqp://guest:guest@127.0.0.1:5672//``);

or ``$BENCH_ERRANDS_BROKER`` if set. Every run gets Celery queues of its own
(``$BENCH_ERRANDS_QUEUE``, and ``<queue>-batch`` for W1's batch, which no worker reads),
deleted with their exchanges after the run, so that no message of an earlier or
interrupted run can reach a later one. Only kombu is imported here (not errands).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable

ENGINES = ("sql", "celery-redis", "celery-rabbitmq")
RABBITMQ_URL = os.environ.get("BENCH_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")
#: Celery's own environment variables: each overrides the broker (or backend) an app
#: was given in code — of errands' engine too. The runner removes them.
CELERY_OVERRIDES = (
    "CELERY_BROKER_URL",
    "CELERY_BROKER_READ_URL",
    "CELERY_BROKER_WRITE_URL",
    "CELERY_RESULT_BACKEND",
)


def check_engine(engine: str) -> str:
    if engine not in ENGINES:
        raise SystemExit(f"BENCH_ERRANDS_ENGINE must be one of {ENGINES}, not {engine!r}")
    return engine


def broker_url(engine: str, redis_url: str) -> str:
    """The broker of a Celery engine (``redis_url``: the peers' ``common.REDIS_URL``)."""
    override = os.environ.get("BENCH_ERRANDS_BROKER")
    if override:
        return override
    if engine == "celery-redis":
        return f"{redis_url}/0"
    if engine == "celery-rabbitmq":
        return RABBITMQ_URL
    raise ValueError(f"{engine!r} is not a Celery engine")


def broker_name(url: str) -> str:
    return "RabbitMQ" if url.startswith(("amqp", "pyamqp")) else "Redis"


def new_queue(tag: str) -> str:
    """A Celery queue name no other run uses."""
    return f"errands-bench-{tag}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def batch_queue(queue: str) -> str:
    """The queue W1's ``submit_many`` publishes to: no worker reads it."""
    return f"{queue}-batch"


def safe(url: str) -> str:
    """A broker URL without its password."""
    from kombu.utils.url import maybe_sanitize_url

    return str(maybe_sanitize_url(url))


def check_broker(url: str) -> None:
    """Raise if the broker does not answer (within a few seconds)."""
    from kombu import Connection

    with Connection(url, connect_timeout=3) as conn:
        conn.ensure_connection(max_retries=1)


def delete_queues(url: str, queues: Iterable[str]) -> None:
    """Delete these Celery queues (with any message left in them) and their exchanges.

    Each is declared first, the way Celery declares a queue it creates (a durable
    direct exchange of the same name, routing key = the name): kombu's Redis transport
    deletes only the queues it knows bound in this process, and declaring a queue
    that is already there changes nothing."""
    from kombu import Connection, Exchange, Queue

    with Connection(url, connect_timeout=3) as conn:
        channel = conn.default_channel
        for name in queues:
            exchange = Exchange(name, type="direct")
            queue = Queue(name, exchange, routing_key=name).bind(channel)
            queue.declare()
            queue.delete()
            exchange.bind(channel).delete()
