"""errands in a Flask application: ``task_blueprint`` (``pip install 'errands[flask]'``).

``app.register_blueprint(task_blueprint(errands_app, current_owner=...),
url_prefix="/api")`` serves the HTTP API of ``errands.web.task_api`` — the same
resources, problem documents, ``ETag``s and Server-Sent Event streams — from a WSGI
application, and ``<errands-task>``'s script as ``/api/errands-task.js``. See
docs/flask.md.
"""

from .blueprint import AdminFn, OwnerFn, task_blueprint

__all__ = ["AdminFn", "OwnerFn", "task_blueprint"]
