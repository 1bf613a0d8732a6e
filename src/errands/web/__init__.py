"""The HTTP layer: ``task_api`` mounts the errands API into any FastAPI or Starlette app.

Needs the ``web`` extra (``pip install errands[web]``).
"""

from .api import task_api

__all__ = ["task_api"]
