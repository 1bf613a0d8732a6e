"""A Flask application whose users start a task and watch it run: errands' HTTP API as
a blueprint (``errands.flask.task_blueprint``) behind the application's own sign-in.

Run it from the repository's root, in two terminals:

    flask --app examples/flask_app.py run
    errands worker examples.flask_app:errands_app

Both use the database of ``$ERRANDS_DATABASE_URL``, or the SQLite file ``errands.db``
in the current folder (made and migrated on first use). Open http://127.0.0.1:5000/
and sign in as ``alice`` (password ``wonderland``) or ``bob`` (password ``builder``).
"Start" submits a ``count`` task through the API and the page follows it live with
``<errands-task>``: status, progress, time left, Cancel, and the result. Each task has
its own page, ``/tasks/<id>``, which only its owner can open.

Sessions are Flask's signed cookie (``SameSite=Lax``). The key is made at start, so a
restart signs everyone out: set ``FLASK_SECRET_KEY`` to keep one (several web
processes must share it). Pages' forms carry the session's CSRF token, and the API
refuses a browser's change (a POST or DELETE) without it in ``X-CSRF-Token`` — the
element sends the page's ``<meta name="csrf-token">``.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets

from flask import Flask, Request, abort, redirect, render_template, request, session, url_for
from jinja2 import DictLoader
from pydantic import BaseModel, Field
from werkzeug.security import check_password_hash, generate_password_hash
from werkzeug.wrappers import Response

from errands import Errands, TaskContext, TaskNotFound
from errands.flask import task_blueprint

# -- the tasks (what `errands worker examples.flask_app:errands_app` runs) -----------------
errands_app = Errands()


class CountIn(BaseModel):
    to: int = Field(20, ge=1, le=1000)
    delay: float = Field(0.25, ge=0, le=5)


@errands_app.task(max_attempts=3, timeout=3600)
async def count(ctx: TaskContext, payload: CountIn) -> dict[str, int]:
    """Counts to ``to``, one step every ``delay`` seconds, reporting progress."""
    for i in range(1, payload.to + 1):
        await asyncio.sleep(payload.delay)
        ctx.progress(i, payload.to, f"counted {i} of {payload.to}")
    return {"counted": payload.to}


# -- users ----------------------------------------------------------------------------------
#: The demo's users and their password hashes (a real application keeps these in its
#: database).
USERS = {
    "alice": generate_password_hash("wonderland"),
    "bob": generate_password_hash("builder"),
}

SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


def current_user() -> str | None:
    user = session.get("user")
    return user if isinstance(user, str) and user in USERS else None


def csrf_token() -> str:
    """The session's CSRF token (made on first use)."""
    token = session.get("csrf")
    if not isinstance(token, str):
        token = session["csrf"] = secrets.token_urlsafe(24)
    return token


def csrf_ok(submitted: str | None) -> bool:
    expected = session.get("csrf")
    return isinstance(expected, str) and hmac.compare_digest(expected, submitted or "")


def api_owner(req: Request) -> str | None:
    """The API's ``current_owner``: the signed-in user; a change must also prove it comes
    from our pages (``X-CSRF-Token``)."""
    user = current_user()
    if user is None:
        return None
    if req.method not in SAFE_METHODS and not csrf_ok(req.headers.get("X-CSRF-Token")):
        return None
    return user


# -- the Flask application --------------------------------------------------------------------
app = Flask(__name__)
app.config.update(SECRET_KEY=secrets.token_hex(32), SESSION_COOKIE_SAMESITE="Lax")
app.config.from_prefixed_env()  # FLASK_SECRET_KEY, …
app.register_blueprint(task_blueprint(errands_app, current_owner=api_owner), url_prefix="/api")

TEMPLATES = {
    "layout.html": """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <meta name="csrf-token" content="{{ csrf_token() }}">
  <title>{{ title }} · errands in Flask</title>
  <script src="{{ url_for('errands.element_script') }}"></script>
  <style>
    body { font: 16px/1.5 system-ui, sans-serif; max-width: 40rem; margin: 2rem auto; }
    header { display: flex; gap: 1rem; align-items: baseline; }
    errands-task { display: block; margin: 1rem 0; }
    .et-bar { width: 100%; }
    [hidden] { display: none !important; }
  </style>
</head>
<body>
  <header>
    <strong>errands in Flask</strong>
    {% if user %}
      <span>signed in as <span class="who">{{ user }}</span></span>
      <form method="post" action="{{ url_for('logout') }}">
        <input type="hidden" name="csrf" value="{{ csrf_token() }}">
        <button type="submit">Sign out</button>
      </form>
    {% endif %}
  </header>
  <main>{% block main %}{% endblock %}</main>
</body>
</html>""",
    "login.html": """{% extends "layout.html" %}
{% block main %}
<h1>Sign in</h1>
{% if error %}<p class="error" role="alert">{{ error }}</p>{% endif %}
<form method="post" class="login">
  <input type="hidden" name="csrf" value="{{ csrf_token() }}">
  <p><label>Name <input name="username" autocomplete="username" required></label></p>
  <p><label>Password <input name="password" type="password"
     autocomplete="current-password" required></label></p>
  <button type="submit">Sign in</button>
</form>
{% endblock %}""",
    "home.html": """{% extends "layout.html" %}
{% block main %}
<h1>Count</h1>
<form id="start">
  <label>Count to <input name="to" type="number" value="20" min="1" max="1000"></label>
  <button type="submit">Start</button>
</form>
<p id="problem" class="error" role="alert" hidden></p>
<div id="task"></div>
<p><a id="permalink" hidden>This task's page</a></p>
<script>
  // Submit through the API (the session cookie says who; the header proves the page),
  // then follow the new task with <errands-task>.
  const form = document.getElementById("start");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const problem = document.getElementById("problem");
    const response = await fetch({{ url_for("errands.submit")|tojson }}, {
      method: "POST",
      credentials: "same-origin",
      headers: {
        "Content-Type": "application/json",
        "X-CSRF-Token": document.querySelector('meta[name="csrf-token"]').content,
      },
      body: JSON.stringify({name: "count", payload: {to: Number(form.elements.to.value)}}),
    });
    const doc = await response.json();
    if (!response.ok) {
      problem.textContent = doc.detail;
      problem.hidden = false;
      return;
    }
    problem.hidden = true;
    const element = document.createElement("errands-task");
    element.setAttribute("api", {{ api|tojson }});
    element.setAttribute("task-id", doc.id);
    document.getElementById("task").replaceChildren(element);
    const link = document.getElementById("permalink");
    link.href = {{ url_for("task_page", task_id="ID")|tojson }}.replace("ID", doc.id);
    link.hidden = false;
  });
</script>
{% endblock %}""",
    "task.html": """{% extends "layout.html" %}
{% block main %}
<h1>{{ task.name }}</h1>
<errands-task api="{{ api }}" task-id="{{ task.id }}"></errands-task>
<p><a href="{{ url_for('home') }}">Start another</a></p>
{% endblock %}""",
    "not_found.html": """{% extends "layout.html" %}
{% block main %}
<h1>No such task.</h1>
<p><a href="{{ url_for('home') }}">Home</a></p>
{% endblock %}""",
}
app.jinja_loader = DictLoader(TEMPLATES)


@app.context_processor
def page_context() -> dict[str, object]:
    api = url_for("errands.tasks").removesuffix("/tasks")
    return {"user": current_user(), "csrf_token": csrf_token, "api": api}


@app.get("/login")
def login_form() -> str:
    return render_template("login.html", title="Sign in")


@app.post("/login")
def login() -> str | Response | tuple[str, int]:
    if not csrf_ok(request.form.get("csrf")):
        abort(400)
    name = request.form.get("username", "")
    hashed = USERS.get(name)
    if hashed is None or not check_password_hash(hashed, request.form.get("password", "")):
        return render_template("login.html", title="Sign in", error="Wrong name or password."), 401
    session.clear()
    session["user"] = name
    return redirect(url_for("home"))


@app.post("/logout")
def logout() -> Response:
    if not csrf_ok(request.form.get("csrf")):
        abort(400)
    session.clear()
    return redirect(url_for("login_form"))


@app.get("/")
def home() -> str | Response:
    if current_user() is None:
        return redirect(url_for("login_form"))
    return render_template("home.html", title="Count")


@app.get("/tasks/<task_id>")
def task_page(task_id: str) -> str | Response | tuple[str, int]:
    user = current_user()
    if user is None:
        return redirect(url_for("login_form"))
    try:
        task = errands_app.sync.get(task_id, owner=user)
    except TaskNotFound:
        return render_template("not_found.html", title="No such task"), 404
    return render_template("task.html", title=task.name, task=task)
