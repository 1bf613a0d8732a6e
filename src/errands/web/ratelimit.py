"""Per-owner submit rate limit: a token bucket per owner, in this process's memory.

An owner may submit ``burst`` tasks at once and then ``rate`` per second. With several
web processes each enforces the limit on its own (so the effective limit is that many
times higher); that is enough to stop a runaway script or a stuck button.
"""

from __future__ import annotations

import math
import time


class SubmitLimiter:
    def __init__(self, rate: float, burst: int) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("submit rate must be positive and burst at least 1")
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, owner: str) -> float:
        """Spend one token of ``owner``: 0 when allowed, else seconds until one is."""
        now = time.monotonic()
        tokens, stamp = self._buckets.get(owner, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - stamp) * self.rate)
        if tokens < 1.0:
            self._buckets[owner] = (tokens, now)
            return (1.0 - tokens) / self.rate
        self._buckets[owner] = (tokens - 1.0, now)
        if len(self._buckets) > 50_000:
            self._prune(now)
        return 0.0

    def _prune(self, now: float) -> None:
        full = self.burst / self.rate  # seconds to refill: a bucket as good as new
        self._buckets = {o: b for o, b in self._buckets.items() if now - b[1] < full}

    @staticmethod
    def retry_after(wait: float) -> str:
        return str(max(1, math.ceil(wait)))
