"""One-time messages kept in the session between a refused form and the page that
shows it (post/redirect/get).

A refused search used to be rendered as the answer of ``POST /search``: a refresh
posted the form again, and the address bar showed ``/search``. Now the POST keeps the
errors and the fields the person typed in the session (``keep``), answers 303 to the
page the form is on, and that page takes them out (``take``): shown once, gone on the
next load.

The session is a signed cookie, which browsers keep only up to about 4 KB; what is kept
here is bounded (``BUDGET`` characters of JSON, as the session middleware encodes it):
the longest field is shortened until it fits.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request

#: Session key of the one-time message.
KEY = "flash"
#: The most JSON characters a kept message takes (the cookie also holds the sign-in and
#: the CSRF token, and is base64-encoded: 4/3 the size).
BUDGET = 1800
MAX_ERRORS = 5


@dataclass(frozen=True, slots=True)
class Flash:
    """What the page shows once: the form's errors, and the fields to fill it with."""

    errors: list[str] = field(default_factory=list)
    form: dict[str, str] = field(default_factory=dict)


def keep(request: Request, page: str, errors: list[str], form: dict[str, str]) -> None:
    """Keep ``errors`` and ``form`` (without its CSRF token) for ``page``'s next load."""
    fields = {k: v for k, v in form.items() if k != "csrf"}
    data: dict[str, Any] = {"page": page, "errors": [e[:300] for e in errors[:MAX_ERRORS]]}
    data["form"] = fields
    while len(json.dumps(data)) > BUDGET and any(fields.values()):
        longest = max(fields, key=lambda k: len(json.dumps(fields[k])))
        fields[longest] = fields[longest][: len(fields[longest]) // 2]
    request.session[KEY] = data


def take(request: Request, page: str) -> Flash:
    """The message kept for ``page`` (removed from the session); an empty one if none."""
    data = request.session.get(KEY)
    if not isinstance(data, dict) or data.get("page") != page:
        return Flash()
    del request.session[KEY]
    errors = [str(e) for e in data.get("errors") or []]
    form = data.get("form")
    fields = {str(k): str(v) for k, v in form.items()} if isinstance(form, dict) else {}
    return Flash(errors, fields)
