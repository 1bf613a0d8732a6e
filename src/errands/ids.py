"""Task ids: unguessable and time-ordered.

The layout is UUID version 7: 48 bits of Unix time in milliseconds, then 74 random bits
(from :func:`os.urandom`). Ids sort by creation time to the millisecond, so "newest
first" is "largest id first", and knowing one id tells nothing about any other.
"""

from __future__ import annotations

import os
import time
import uuid


def new_task_id(now: float | None = None) -> str:
    ms = int((time.time() if now is None else now) * 1000) & ((1 << 48) - 1)
    rand = int.from_bytes(os.urandom(10), "big") & ((1 << 74) - 1)
    rand_a = rand >> 62  # 12 bits
    rand_b = rand & ((1 << 62) - 1)  # 62 bits
    value = (ms << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b
    return str(uuid.UUID(int=value))


def is_task_id(value: str) -> bool:
    """True when ``value`` has the shape of a task id (cheap check before a query)."""
    if len(value) != 36:
        return False
    try:
        parsed = uuid.UUID(value)
    except ValueError:
        return False
    return str(parsed) == value
