"""Owners: who a task or a schedule belongs to, as the public API takes them.

Every call an end user's request can reach takes ``owner`` (the user's id, a non-empty
string) or, from administrative code, :data:`ANY_OWNER`. The store turns the owner into
a WHERE term, so another owner's task or schedule looks exactly like a missing one.
"""

from __future__ import annotations

from typing import Any


class _AnyOwner:
    def __repr__(self) -> str:
        return "ANY_OWNER"


#: Pass as ``owner=`` from administrative code to act on every owner's tasks.
ANY_OWNER: Any = _AnyOwner()


def owner_filter(owner: object) -> str | None:
    """The owner to put in a query: a user's id, or None for :data:`ANY_OWNER`."""
    if owner is ANY_OWNER:
        return None
    if not isinstance(owner, str) or not owner:
        raise ValueError("owner must be a non-empty string (or ANY_OWNER for admin code)")
    if "\x00" in owner:
        raise ValueError("owner must not contain NUL characters")
    return owner


def owner_of(owner: object) -> str:
    """An owner for something new (a submit, a schedule), checked: a non-empty string of
    at most 255 characters, without NUL characters (the store refuses those)."""
    if not isinstance(owner, str) or not owner:
        raise ValueError("owner must be a non-empty string")
    if "\x00" in owner:
        raise ValueError("owner must not contain NUL characters")
    if len(owner) > 255:
        raise ValueError("owner must be at most 255 characters")
    return owner
