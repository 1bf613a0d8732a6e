"""Errors as RFC 9457 ``application/problem+json`` documents.

Handlers raise :class:`Problem`; ``protocol.problem_reply`` turns it (and errands'
own not-found and database errors) into the answer in every framework, so the API
answers in one format whatever the host application's exception handlers do. The
not-found answer is one constant byte string: a task that belongs to someone else gets
exactly the bytes a missing one gets.

A database that cannot serve is ``503`` with ``Retry-After`` (it comes back by itself);
one out of space is ``507`` without it (space comes back when someone frees it: a
client should not retry at once, nor on a schedule the server cannot know).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

from pydantic import BaseModel, ConfigDict

MEDIA_TYPE = "application/problem+json"

#: The titles of the answers (RFC 9110's names: Python before 3.13 has older ones for 413
#: and 422); any other status is titled "Error".
_TITLES = {c: HTTPStatus(c).phrase for c in (400, 401, 403, 404, 405, 409, 415, 429, 431, 503, 507)}
_TITLES |= {413: "Content Too Large", 422: "Unprocessable Content"}


class ProblemModel(BaseModel):
    """The body of every error response (RFC 9457)."""

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    #: For 422: one entry per invalid field, ``{"field": "payload.pattern", "message": ...}``.
    errors: list[dict[str, Any]] | None = None


class Problem(Exception):
    """An error answer; raise it from a handler."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        errors: Sequence[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = list(errors) if errors is not None else None
        self.headers = headers or {}

    def body(self) -> bytes:
        doc: dict[str, Any] = {
            "type": "about:blank",
            "title": _TITLES.get(self.status, "Error"),
            "status": self.status,
            "detail": self.detail,
        }
        if self.errors is not None:
            doc["errors"] = self.errors
        return json.dumps(doc, separators=(",", ":")).encode()


#: The one answer for a task that is missing or not the caller's.
NOT_FOUND_DETAIL = "No such task."
#: The one answer for a schedule that is missing or not the caller's.
SCHEDULE_NOT_FOUND_DETAIL = "No such schedule."


def field_name(loc: Sequence[Any]) -> str:
    """``["body", "payload", "pattern"]`` -> ``"payload.pattern"``."""
    parts = [str(p) for p in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    return ".".join(parts) or "body"


def validation_problem(errors: Sequence[Any], prefix: Sequence[Any] = ()) -> Problem:
    """A 422 naming each invalid field, from pydantic-style error entries."""
    entries = [
        {"field": field_name([*prefix, *e.get("loc", ())]), "message": str(e.get("msg", ""))}
        for e in errors
    ]
    summary = "; ".join(f"{e['field']}: {e['message']}" for e in entries[:5])
    return Problem(
        422, f"Invalid input: {summary}" if summary else "Invalid input.", errors=entries
    )


def problem_responses(*codes: int, subject: str = "task") -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the problem answers an endpoint can give (``subject``: what
    its path names, for the 404's description)."""
    described = {
        401: "No identity: the caller is not signed in.",
        404: f"No such {subject} (or it is not the caller's: the answer is the same).",
        409: "The task is not in a state that allows this, or the `Idempotency-Key` was "
        "used before for a different request.",
        413: "The body or the payload is too large.",
        415: "The body is not JSON.",
        422: "Invalid input; `errors` names each field.",
        429: "Too many submits; see `Retry-After`.",
        431: "The request's headers are too large.",
        503: "The task database is unavailable for a moment; see `Retry-After`.",
        507: "The task database is out of space: nothing was written. Retry once space "
        "is freed (there is no `Retry-After`).",
    }
    return {
        code: {
            "description": described[code],
            # Inline, not ``"model"``: FastAPI files a model's schema under the route's
            # media type (application/json), which problem answers never have.
            "content": {MEDIA_TYPE: {"schema": ProblemModel.model_json_schema()}},
        }
        for code in (*codes, 503, 507)
    }
