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
_pool = b""  # random bytes from os.urandom, taken 14 at a time (one call per ~290 ids)


def _layout(ms: int, rand: int) -> int:
    rand_a = rand >> 62  # 12 bits
    rand_b = rand & ((1 << 62) - 1)  # 62 bits
    return (ms << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b


def new_task_id(now: float | None = None) -> str:
    global _last, _pool
    ms = int((time.time() if now is None else now) * 1000) & ((1 << 48) - 1)
    with _lock:
        if len(_pool) < 14:
            _pool = os.urandom(4096)
        chunk, _pool = _pool[:14], _pool[14:]
        rand = int.from_bytes(chunk[:10], "big") & ((1 << _RAND_BITS) - 1)
        key = (ms << _RAND_BITS) | rand
        if key <= _last:
            key = _last + 1 + int.from_bytes(chunk[10:], "big")
        _last = key
    ms, rand = key >> _RAND_BITS, key & ((1 << _RAND_BITS) - 1)
    h = f"{_layout(ms & ((1 << 48) - 1), rand):032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def is_task_id(value: str) -> bool:
    """True when ``value`` has the shape of a task id (cheap check before a query)."""
    try:
        return len(value) == 36 and str(uuid.UUID(value)) == value
    except ValueError:
        return False
