"""Groups in the HTTP API, free of any web framework: what ``POST /tasks`` with
``payloads`` may hold, which part a refused payload is, and the query of
``GET /tasks/{id}/children``.

:class:`~errands.web.protocol.TaskProtocol` answers the requests; this module holds
their rules. A group is submitted as ``{"name", "payloads": [...], "then"?,
"priority"?}`` and answered with the group's own task resource; its parts (and its
``then`` task, last) are read in order, a page at a time, the cursor being a part's
``group_index``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..errors import InvalidPayload
from ..registry import Registry
from .problems import Problem, validation_problem

#: The most payloads (parts) one group may have over HTTP.
MAX_PARTS = 10_000
#: The largest ``group_index`` the store holds (a 32-bit column).
MAX_INDEX = 2**31 - 1


class ChildrenQuery(BaseModel):
    """The query of ``GET /tasks/{id}/children``."""

    model_config = ConfigDict(extra="ignore")

    after: int = Field(-1, ge=-1, le=MAX_INDEX)
    limit: int = Field(100, ge=1, le=500)


def group_refusals(*, payload_given: bool, run_at: bool, key: str | None) -> list[dict[str, Any]]:
    """What a group's submit may not carry beside ``payloads`` (pydantic-style error
    entries; empty when nothing is in the way)."""
    errors: list[dict[str, Any]] = []
    if payload_given:
        errors.append({"loc": ["payload"], "msg": "give payload or payloads, not both"})
    if run_at:
        errors.append({"loc": ["run_at"], "msg": "a group runs at once: not with payloads"})
    if key is not None:
        errors.append({"loc": ["Idempotency-Key"], "msg": "not accepted with payloads"})
    return errors


def then_without_payloads() -> Problem:
    return validation_problem([{"loc": ["then"], "msg": "only a group (payloads) has then"}])


def refused_part(
    registry: Registry, name: str, payloads: Sequence[Any], exc: InvalidPayload
) -> Problem:
    """The 422 for a group whose payloads the task's model refused (``exc``, which does
    not say which one): the first refused payload, named ``payloads.<i>.…``. Only run
    on refusal, so a group that passes is checked once."""
    definition = registry.get(name)
    for index, payload in enumerate(payloads):
        try:
            definition.parse(payload)
        except InvalidPayload as refused:
            errors = refused.errors or [{"msg": refused.message}]
            return validation_problem(errors, ["payloads", index])
    return validation_problem(exc.errors or [{"msg": exc.message}], ["payloads"])


__all__ = [
    "MAX_INDEX",
    "MAX_PARTS",
    "ChildrenQuery",
    "group_refusals",
    "refused_part",
    "then_without_payloads",
]
