"""A token bucket per sender (bursts up to the per-minute limit, refilled continuously),
and a throttle for warnings that may repeat many times a second."""

from __future__ import annotations

from typing import Any


class RateLimiter:
    """``allow(key, now)`` is False once ``key`` has used ``per_minute`` in the last minute."""

    def __init__(self, per_minute: int) -> None:
        self._capacity = float(per_minute)
        self._refill_per_second = per_minute / 60.0
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, key: str, now: float, cost: float = 1.0) -> bool:
        """Take ``cost`` tokens (one per message) for ``key`` if that many are left."""
        tokens, last = self._buckets.get(key, (self._capacity, now))
        tokens = min(self._capacity, tokens + (now - last) * self._refill_per_second)
        if tokens < cost:
            self._buckets[key] = (tokens, now)
            return False
        self._buckets[key] = (tokens - cost, now)
        return True

    def forget(self, key: str) -> None:
        """Drop the bucket of a sender that is gone (keeps memory bounded)."""
        self._buckets.pop(key, None)


class WarningThrottle:
    """Logs a repeated warning at most once per ``every`` seconds, with a count of the rest."""

    def __init__(self, log: Any, clock: Any, every: float) -> None:
        self._log = log
        self._clock = clock
        self._every = every
        self._last: dict[str, float] = {}
        self._skipped: dict[str, int] = {}

    def warn(self, kind: str, text: str) -> None:
        """Log ``text`` now, or count it for the next line of this ``kind``."""
        now = self._clock.seconds()
        last = self._last.get(kind)
        if last is not None and now - last < self._every:
            self._skipped[kind] = self._skipped.get(kind, 0) + 1
            return
        skipped = self._skipped.pop(kind, 0)
        self._last[kind] = now
        more = f" ({skipped} more like it in the last {self._every:g} s)" if skipped else ""
        self._log.warn("{text}{more}", text=text, more=more)
