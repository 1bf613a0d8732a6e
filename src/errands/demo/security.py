"""The demo's security headers: a pure-ASGI middleware that ``create_app`` installs
around the whole site (pages, the admin dashboard, the API, static files).

Every answer gets ``X-Content-Type-Options: nosniff``. Every document a browser renders
(HTML, and SVG, which may carry script) also gets:

- ``Content-Security-Policy`` (``CONTENT_SECURITY_POLICY``): scripts, styles, fonts and
  connections (``fetch``, ``EventSource``, and same-origin WebSockets, which Chromium
  counts as ``'self'``) from the site itself only; images also as ``data:`` URLs (the
  API docs' stylesheet draws its icons so). No inline script, no inline event handler
  (``onclick=``), no ``style=`` attribute, no ``javascript:`` URL: every template and
  the dashboard keep their scripts and styles in static files. Forms post only to the
  site; ``<base>`` and plugins are off.
- ``X-Frame-Options: DENY`` beside ``frame-ancestors 'none'`` (for browsers that know
  only the older header): no page can be framed, so none can be clickjacked.
- ``Referrer-Policy: same-origin``: links to other sites do not tell them which task
  or page the user came from.
- ``Cache-Control: no-store``: every page carries the session's CSRF token, and a
  signed-in user's pages their tasks, tokens or (for administrators) everyone's; none
  belongs in a shared or a disk cache.

A header the application already set (an answer that needs its own policy) is kept.
"""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: The pages' policy, one directive per entry.
CSP_DIRECTIVES = (
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "font-src 'self'",
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
)
CONTENT_SECURITY_POLICY = "; ".join(CSP_DIRECTIVES)

#: On every answer.
ALWAYS = {"X-Content-Type-Options": "nosniff"}
#: On every document (``DOCUMENT_TYPES``) besides.
DOCUMENT_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
#: The media types a browser renders as a document that may run script.
DOCUMENT_TYPES = ("text/html", "image/svg+xml", "application/xhtml+xml")


def is_document(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower() in DOCUMENT_TYPES


class SecurityHeaders:
    """Adds the headers above to each HTTP answer of ``app`` (WebSockets pass as they
    are)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                headers = MutableHeaders(scope=message)
                added = ALWAYS
                if is_document(headers.get("content-type", "")):
                    added = ALWAYS | DOCUMENT_HEADERS
                for name, value in added.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)
