"""Login throttling: a few attempts per key (an e-mail address, a client address) in a
window, then a lock-out that grows with each further lock.

The demo keeps two throttles (``Demo.logins``): one keyed by the e-mail address typed
into the login or register form, whether or not an account has it (so a lock-out tells
nothing about accounts), and one keyed by the client's address. An attempt must pass
both. The count is taken *before* the password is checked, so a burst of parallel
attempts cannot slip past it while their hashes run, and a refused attempt costs no
Argon2 hash; an attempt that turns out right is given back (:meth:`Throttle.give_back`).

- ``attempts`` attempts within ``window`` seconds are allowed; the next one starts a
  lock-out of ``delay`` seconds, during which every attempt, with the right password
  too, is refused (429, "try again in N s").
- Each further lock-out of the same key doubles, up to ``max_delay``. A key with no
  attempt for ``forget`` seconds starts again from nothing.

The state lives in this process's memory: with several web processes each counts on its
own (the effective limit is that many times higher), and a restart forgets every count.
That is enough for the demo; a deployment with many processes would keep the counts in
a shared store. Behind a reverse proxy the client address is the proxy's unless the
server is told to trust its forwarding header (uvicorn's ``--proxy-headers``).

Locking an account after a few wrong passwords lets anyone delay its owner's login for
a while; the per-account delay is capped (``max_delay``) for that reason.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Rules:
    """How many attempts one key may make, and how long its lock-outs are (seconds)."""

    #: Attempts allowed within ``window`` before a lock-out.
    attempts: int = 5
    window: float = 300.0
    #: The first lock-out; each further one doubles, up to ``max_delay``.
    delay: float = 30.0
    max_delay: float = 900.0
    #: A key with no attempt for this long is forgotten (its lock-outs too).
    forget: float = 3600.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or min(self.window, self.delay, self.max_delay, self.forget) <= 0:
            raise ValueError("throttle rules need at least one attempt and positive times")


@dataclass(slots=True)
class _Key:
    stamps: list[float] = field(default_factory=list)  # attempts counted, oldest first
    locked_until: float = 0.0
    locks: int = 0  # lock-outs so far (each doubles the next)
    last: float = 0.0  # the last attempt


class Throttle:
    """Attempts per key under :class:`Rules`; safe to share between threads."""

    def __init__(self, rules: Rules, clock: Callable[[], float] = time.monotonic) -> None:
        self.rules = rules
        self._clock = clock
        self._keys: dict[str, _Key] = {}
        self._lock = threading.Lock()

    def wait(self, key: str) -> float:
        """Seconds until ``key`` may try again (0: now), counting nothing."""
        with self._lock:
            state = self._current(key, self._clock())
            return 0.0 if state is None else max(0.0, state.locked_until - self._clock())

    def attempt(self, key: str) -> float:
        """Count an attempt of ``key``: 0 when it may go ahead, else the seconds until
        one may (the attempt is refused and not counted)."""
        with self._lock:
            return self._attempt(key, self._clock())

    def give_back(self, key: str) -> None:
        """An attempt of ``key`` does not count after all (it was right, or nothing was
        checked)."""
        with self._lock:
            state = self._keys.get(key)
            if state is not None and state.stamps:
                state.stamps.pop()

    def forgive(self, key: str) -> None:
        """Forget ``key``'s attempts and lock-outs (its owner proved who they are)."""
        with self._lock:
            self._keys.pop(key, None)

    def _current(self, key: str, now: float) -> _Key | None:
        state = self._keys.get(key)
        if state is not None and now - state.last > self.rules.forget and now >= state.locked_until:
            del self._keys[key]
            return None
        return state

    def _attempt(self, key: str, now: float) -> float:
        rules = self.rules
        state = self._current(key, now)
        if state is None:
            if len(self._keys) >= 100_000:
                self._prune(now)
            state = self._keys[key] = _Key()
        if now < state.locked_until:
            return state.locked_until - now
        state.stamps = [t for t in state.stamps if now - t < rules.window]
        if len(state.stamps) >= rules.attempts:
            delay = min(rules.max_delay, rules.delay * 2.0**state.locks)
            state.locked_until = now + delay
            state.locks += 1
            state.stamps.clear()
            state.last = now
            return delay
        state.stamps.append(now)
        state.last = now
        return 0.0

    def _prune(self, now: float) -> None:
        for key in [k for k, s in self._keys.items() if now - s.last > self.rules.window]:
            if now >= self._keys[key].locked_until:
                del self._keys[key]


@dataclass(frozen=True, slots=True)
class Logins:
    """The demo's two throttles: an attempt must pass both, and one refused by either
    is counted by neither."""

    #: Keyed by the e-mail address typed (whether or not an account has it).
    account: Throttle
    #: Keyed by the client's address.
    address: Throttle

    @classmethod
    def of(cls, account: Rules, address: Rules) -> Logins:
        return cls(Throttle(account), Throttle(address))

    def attempt(self, email: str, client: str) -> float:
        """Count an attempt: 0 when it may go ahead, else the seconds until one may."""
        wait = max(self.account.wait(email), self.address.wait(client))
        if wait:
            return wait
        wait = self.account.attempt(email)
        if wait:  # a parallel attempt started a lock-out meanwhile
            return wait
        wait = self.address.attempt(client)
        if wait:
            self.account.give_back(email)
        return wait


def retry_after(wait: float) -> int:
    """Whole seconds to tell the user (at least 1)."""
    return max(1, math.ceil(wait))
