"""The dashboard's protection against cross-site requests, independent of the host's
sessions: a double-submit token and a same-origin check.

* **The token.** The dashboard keeps a random token (32 bytes) in a cookie of its own,
  ``errands_dashboard_csrf``: ``HttpOnly``, ``SameSite=Strict``, ``Path`` = where the
  dashboard is mounted, ``Secure`` over HTTPS. Every form of its pages carries the same
  token in a hidden field; a POST whose field does not equal the cookie is refused. A
  page of another site can neither read the cookie nor make the browser send it
  (``Strict``), so it cannot post a matching pair.
* **The origin.** A POST whose ``Origin`` header (or, without one, ``Referer``) names
  another host than the request's own (its ``Host``, or ``X-Forwarded-Host`` set by a
  proxy) is refused, whatever it carries. This stops what the token alone cannot: a
  sibling subdomain (same *site*, so ``Strict`` cookies flow) that planted a cookie of
  its choosing. A request with neither header (some privacy tools strip both) is judged
  by the token alone.

Only administrators ever get a token (everyone else gets a 404 before any is issued).
"""

from __future__ import annotations

import re
import secrets
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import Response

COOKIE = "errands_dashboard_csrf"
#: The forms' hidden field.
FIELD = "csrf"
_TOKEN = re.compile(r"[A-Za-z0-9_-]{43}")
#: A cookie ``Path`` needs no quoting: anything else falls back to ``/``.
_COOKIE_PATH = re.compile(r"/[A-Za-z0-9._~!$&'()*+,=:@%/-]*")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def current_token(request: Request) -> str | None:
    """The token of the request's cookie, if it holds a well-formed one."""
    token = request.cookies.get(COOKIE)
    return token if token is not None and _TOKEN.fullmatch(token) else None


def new_token() -> str:
    return secrets.token_urlsafe(32)


def set_cookie(response: Response, request: Request, token: str) -> None:
    root = str(request.scope.get("root_path", ""))
    response.set_cookie(
        COOKIE,
        token,
        path=root if _COOKIE_PATH.fullmatch(root) else "/",
        secure=request.url.scheme in ("https", "wss"),
        httponly=True,
        samesite="strict",
    )


def accepted(request: Request, submitted: str | None) -> bool:
    """Whether a POST carries the cookie's token and comes from this host."""
    token = current_token(request)
    if token is None or submitted is None:
        return False
    return secrets.compare_digest(token.encode(), submitted.encode()) and same_origin(request)


def same_origin(request: Request) -> bool:
    """False when ``Origin`` (or else ``Referer``) names another host; True when it
    names this one, or when the request has neither."""
    source = request.headers.get("origin") or request.headers.get("referer")
    if source is None:
        return True
    claimed = _address(source)
    if claimed is None or claimed[1] is None:  # "null" (a sandboxed document), junk
        return False
    hosts = [request.headers.get("host", "")]
    hosts += request.headers.get("x-forwarded-host", "").split(",")
    for host in hosts:
        own = _address(f"//{host.strip()}") if host.strip() else None
        if own is None or own[0] != claimed[0]:
            continue
        # A Host header without a port: the scheme's default one, whichever it was.
        if own[1] == claimed[1] or (own[1] is None and claimed[1] in _DEFAULT_PORTS.values()):
            return True
    return False


def _address(url: str) -> tuple[str, int | None] | None:
    """``(host, port)`` of a URL (the scheme's default port when it has a scheme and
    names none); None when it has no host or is malformed."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not host:
        return None
    return host, port if port is not None else _DEFAULT_PORTS.get(parts.scheme)
