"""The search form's refusals, in words for the person at the form.

The library refuses a payload with :class:`~errands.InvalidPayload`, whose ``errors``
are pydantic's entries (``{"loc": ["query"], "type": "string_too_short", "msg": …}``):
right for an API client, not for a person ("query: Value error, …"). ``readable`` says
the same per field and error type, naming what the form calls the field. The wording
is the demo's own, so it lives here and not in the library.

A regular expression that does not compile is described by the ``regex`` engine
itself (``missing ) at position 4``): the query is compiled again here rather than
the reason read back out of the validator's message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import regex

#: What the form calls each field of the search's payload.
FIELDS = {
    "query": "The search text",
    "glob": "The file pattern",
    "folder": "The folder",
    "pause": "Slow motion",
}
_VALUE_ERROR = "Value error, "


def readable(errors: Sequence[Mapping[str, Any]], payload: Mapping[str, Any]) -> list[str]:
    """One sentence per refusal of the search ``payload`` (``InvalidPayload.errors``),
    without duplicates; a general one when there are none."""
    out: list[str] = []
    for error in errors:
        text = _sentence(error, payload)
        if text not in out:
            out.append(text)
    return out or ["This search could not be started. Check the form and try again."]


def _sentence(error: Mapping[str, Any], payload: Mapping[str, Any]) -> str:
    loc = error.get("loc") or []
    field = str(loc[0]) if loc else ""
    kind = str(error.get("type", ""))
    msg = str(error.get("msg", "")).removeprefix(_VALUE_ERROR)
    if field == "query":
        if kind in ("string_too_short", "missing"):
            return "Enter something to search for."
        if kind == "string_too_long":
            return "The search text is too long: at most 200 characters."
        if kind == "value_error" and payload.get("regex"):
            reason = regex_problem(str(payload.get("query", "")))
            if reason is not None:
                return f"This regular expression is not valid: {reason}."
    if field == "glob":
        if kind in ("string_too_short", "missing"):
            return "Enter a file pattern, such as *.py (or * for every file)."
        if kind == "string_too_long":
            return "The file pattern is too long: at most 100 characters."
    if field == "folder" and kind == "value_error":
        return f"{_capitalized(msg)}."
    name = FIELDS.get(field)
    if name is None:
        return "This search could not be started. Check the form and try again."
    return f"{name} is not accepted: {msg[:1].lower()}{msg[1:]}."


def regex_problem(pattern: str) -> str | None:
    """Why ``pattern`` is not a regular expression (the engine's words), or None."""
    try:
        regex.compile(pattern)
    except regex.error as exc:
        return str(exc)
    except (ValueError, OverflowError, RecursionError) as exc:
        return str(exc) or type(exc).__name__
    return None


def _capitalized(text: str) -> str:
    return text[:1].upper() + text[1:]
