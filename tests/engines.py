"""The engines the conformance suite runs on, for the tests and for the test apps that
worker processes load (``tests/apps``: ``$ERRANDS_TEST_ENGINE`` and
``$ERRANDS_TEST_QUEUE`` select the engine there)."""

from __future__ import annotations

import os
import uuid
from typing import Any

CELERY_BROKERS = {
    "redis": os.environ.get("ERRANDS_TEST_REDIS", "redis://127.0.0.1:6379/13"),
    "rabbitmq": os.environ.get("ERRANDS_TEST_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672//"),
}


def new_queue() -> str:
    """A Celery queue of the test's own: no message of another test reaches it."""
    return f"errands-test-{uuid.uuid4().hex[:12]}"


def make_engine(name: str, queue: str) -> Any:
    """What ``Errands(engine=…)`` gets: ``"sql"``, or a Celery engine on ``queue``
    (``name`` is ``celery-redis`` or ``celery-rabbitmq``)."""
    if name == "sql":
        return "sql"
    from celery import Celery

    from errands.engines.celery import CeleryEngine

    celery = Celery("errands-test", broker=CELERY_BROKERS[name.removeprefix("celery-")])
    celery.conf.update(
        worker_hijack_root_logger=False,
        task_ignore_result=True,
        broker_connection_retry_on_startup=True,
        # Redis: look for messages (and a stop request) every 0.1 s, not every second.
        broker_transport_options={"polling_interval": 0.1},
    )
    return CeleryEngine(celery_app=celery, queue=queue, relay_after=1.0)


def engine_from_env() -> Any:
    """The engine a test app module uses in a worker process."""
    return make_engine(
        os.environ.get("ERRANDS_TEST_ENGINE", "sql"), os.environ.get("ERRANDS_TEST_QUEUE", "")
    )
