"""The web process of the cluster tests: ``uvicorn tests.apps.cluster:api``.

It serves the tasks of ``tests.apps.e2e`` (whose workers are ``errands worker
tests.apps.e2e:app``) with ``tests.apps.web``'s HTTP app (identity: ``X-User``). The
database URL comes from ``$ERRANDS_DATABASE_URL``; ``$ERRANDS_TEST_WEB_POLL`` sets the
live views' change poll (seconds, default 1). errands' own log lines (notifier
reconnects, failed reads) go to stderr, for the tests to show when they fail.
"""

from __future__ import annotations

import logging
import os

from tests.apps import e2e
from tests.apps.web import make_api

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
logging.getLogger("alembic").setLevel(logging.WARNING)

app = e2e.app
api = make_api(
    app,
    submit_rate=None,
    poll_interval=float(os.environ.get("ERRANDS_TEST_WEB_POLL", "1.0")),
    keepalive=1.0,
)
