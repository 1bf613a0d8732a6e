"""Errors as RFC 9457 ``application/problem+json`` documents.

Handlers raise :class:`Problem`; the router's route class turns it (and FastAPI's own
validation errors) into a response, so the API answers in one format whatever the host
application's exception handlers do. The not-found answer is one constant byte string:
a task that belongs to someone else gets exactly the bytes a missing one gets.

A database that cannot serve is ``503`` with ``Retry-After`` (it comes back by itself);
one out of space is ``507`` without it (space comes back when someone frees it: a
client should not retry at once, nor on a schedule the server cannot know).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Coroutine, Sequence
from http import HTTPStatus
from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from ..errors import DatabaseUnavailable, StorageFull, TaskNotFound
from ..store.database import log_failure

MEDIA_TYPE = "application/problem+json"
log = logging.getLogger("errands.web")

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

    def response(self) -> Response:
        return Response(self.body(), self.status, self.headers, media_type=MEDIA_TYPE)


NOT_FOUND_DETAIL = "No such task."
#: The one answer for a task that is missing or not the caller's.
_NOT_FOUND_BODY = Problem(404, NOT_FOUND_DETAIL).body()
#: The answers for a database that cannot serve, or is out of space.
_UNAVAILABLE = Problem(
    503, "The task database is unavailable; try again shortly.", headers={"Retry-After": "1"}
)
_FULL = Problem(507, "The task database is out of space; nothing was written.")


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


class ProblemRoute(APIRoute):
    """Answers :class:`Problem`, ``TaskNotFound`` and FastAPI's validation errors as
    problem documents, and refuses oversized header sections (431) before the handler runs."""

    max_header_bytes = 16 * 1024

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        limit = self.max_header_bytes

        async def route(request: Request) -> Response:
            size = sum(len(k) + len(v) + 4 for k, v in request.scope["headers"])
            if size > limit:
                return Problem(431, f"The request's headers exceed {limit} bytes.").response()
            try:
                return await handler(request)
            except Problem as exc:
                return exc.response()
            except TaskNotFound:
                return Response(_NOT_FOUND_BODY, 404, media_type=MEDIA_TYPE)
            except RequestValidationError as exc:
                return validation_problem(exc.errors()).response()
            except HTTPException as exc:
                return Problem(
                    exc.status_code, str(exc.detail), headers=dict(exc.headers or {})
                ).response()
            except (DatabaseUnavailable, StorageFull) as exc:
                # One line in the log; the answer never names the database, its host or files.
                log_failure(log, exc, "errands: %s %s failed", request.method, request.url.path)
                return (_FULL if isinstance(exc, StorageFull) else _UNAVAILABLE).response()

        return route


def problem_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the problem answers an endpoint can give."""
    described = {
        401: "No identity: the caller is not signed in.",
        404: "No such task (or it is not the caller's: the answer is the same).",
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
