"""Task ids: unguessable and time-ordered.

The layout is UUID version 7: 48 bits of Unix time in milliseconds, then 74 random bits
(from :func:`os.urandom`). Ids sort by creation time to the millisecond, so "newest
first" is "largest id first", and knowing one id tells nothing about any other.

Within one process ids also sort in the order they were made: an id that would not be
larger than the previous one (same millisecond, or the clock stepped back) is the
previous one plus a random step of up to 2**32, so it stays unpredictable.
"""

from __future__ import annotations

import os
import threading
import time
import uuid

_RAND_BITS = 74
_lock = threading.Lock()
_last = 0  # (ms << 74) | rand of the previous id


def _layout(ms: int, rand: int) -> int:
    rand_a = rand >> 62  # 12 bits
    rand_b = rand & ((1 << 62) - 1)  # 62 bits
    return (ms << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b


def new_task_id(now: float | None = None) -> str:
    global _last
    ms = int((time.time() if now is None else now) * 1000) & ((1 << 48) - 1)
    rand = int.from_bytes(os.urandom(10), "big") & ((1 << _RAND_BITS) - 1)
    key = (ms << _RAND_BITS) | rand
    with _lock:
        if key <= _last:
            step = 1 + int.from_bytes(os.urandom(4), "big")
            key = _last + step
        _last = key
    ms, rand = key >> _RAND_BITS, key & ((1 << _RAND_BITS) - 1)
    return str(uuid.UUID(int=_layout(ms & ((1 << 48) - 1), rand)))


def is_task_id(value: str) -> bool:
    """True when ``value`` has the shape of a task id (cheap check before a query)."""
    if len(value) != 36:
        return False
    try:
        parsed = uuid.UUID(value)
    except ValueError:
        return False
    return str(parsed) == value
