"""``{% load errands %}``: the ``<errands-task>`` element in Django templates.

``{% errands_task task.id %}`` renders the live view of one task::

    <script type="module" src="/static/errands/errands-task.js"></script>
    <errands-task task-id="…" api="/" csrf="…"></errands-task>

- ``api`` is where the element finds ``tasks/<id>``: the root of errands' URLs
  (``path("tasks/", include("errands.django.urls"))``: ``reverse("errands:tasks")``)
  less its final ``tasks/``. ``api="…"`` sets it instead.
- ``csrf`` is the request's CSRF token (the context's ``csrf_token``), which the element
  sends with its Cancel request. ``csrf=None`` leaves it out.
- Any other keyword becomes an attribute, ``_`` written ``-``:
  ``{% errands_task task.id id="task" class="card" poll=2 data_kind="count" %}``.
  A value of None leaves the attribute out. Every value is escaped.

**The script, once per page.** The element's script (Django's staticfiles:
``{% static "errands/errands-task.js" %}``) comes with the first element a request
renders, so ``{% errands_task %}`` alone is enough. To have it elsewhere, e.g. in
``<head>``, put ``{% errands_script %}`` there: it renders the script tag unless this
request already has it, and the elements after it do not repeat it. (A module script
runs once per page anyway, so a repeat would be harmless; without a ``request`` in the
context, "once" holds within one template's rendering.)

The element's events and styling: ``docs/errands-task.md``. A list of the task's
streamed items, say, can be filled by a page script listening for ``errands:output``.
"""

from __future__ import annotations

from typing import Any

from django import template
from django.core.exceptions import ImproperlyConfigured
from django.templatetags.static import static
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

register = template.Library()

SCRIPT = "errands/errands-task.js"
#: The element reads ``{api}/tasks/<id>``: errands' URLs must be mounted at ``…/tasks/``.
TASKS = "tasks/"
_SCRIPT_SENT = "_errands_script_sent"


def errands_task(context: template.Context, task_id: Any, **attributes: Any) -> SafeString:
    """The ``<errands-task>`` element of task ``task_id`` (with the script, the first
    time in a request)."""
    attrs: dict[str, Any] = {"task-id": str(task_id)}
    attrs["api"] = attributes.pop("api") if "api" in attributes else api_mount()
    attrs["csrf"] = attributes.pop("csrf") if "csrf" in attributes else _csrf_token(context)
    for name, value in attributes.items():
        attrs[name.replace("_", "-")] = value
    pairs = ((name, str(value)) for name, value in attrs.items() if value is not None)
    element = format_html(
        "<errands-task{}></errands-task>", format_html_join("", ' {}="{}"', pairs)
    )
    return format_html("{}{}", errands_script(context), element)


def errands_script(context: template.Context) -> SafeString:
    """The element's script tag, unless this request (or rendering) already has it."""
    holder = context.get("request")
    if holder is None:
        holder = context.render_context
        sent = holder.get(_SCRIPT_SENT, False)
        holder[_SCRIPT_SENT] = True
    else:
        sent = getattr(holder, _SCRIPT_SENT, False)
        setattr(holder, _SCRIPT_SENT, True)
    if sent:
        return SafeString("")
    return format_html('<script type="module" src="{}"></script>', static(SCRIPT))


register.simple_tag(errands_task, takes_context=True)
register.simple_tag(errands_script, takes_context=True)


def api_mount() -> str:
    """The element's ``api``: the root URL of errands' HTTP API less its final
    ``tasks/`` (``"/"`` for ``path("tasks/", include("errands.django.urls"))``)."""
    root = _api_root()
    if not root.endswith(TASKS):
        raise ImproperlyConfigured(
            f"<errands-task> reads {{api}}/tasks/<id>, but errands.django.urls is mounted "
            f"at {root!r}: mount it at a path ending in {TASKS!r}"
        )
    return root.removesuffix(TASKS).rstrip("/") or "/"


def _api_root() -> str:
    """Where ``errands.django.urls`` is mounted: ``reverse()`` of its task collection."""
    try:
        return str(reverse("errands:tasks"))
    except NoReverseMatch:
        raise ImproperlyConfigured(
            "{% errands_task %} needs errands' HTTP API in the URLconf "
            '(path("tasks/", include("errands.django.urls"))), or api="…"'
        ) from None


def _csrf_token(context: template.Context) -> str | None:
    """The CSRF token of the context (``csrf_token``, set for a request's rendering)."""
    token = context.get("csrf_token")
    if token is None or str(token) in ("", "NOTPROVIDED"):
        return None
    return str(token)
