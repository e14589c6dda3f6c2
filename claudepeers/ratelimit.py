"""A token bucket per sender: bursts up to the per-minute limit, refilled continuously."""

from __future__ import annotations


class RateLimiter:
    """``allow(key, now)`` is False once ``key`` has used ``per_minute`` in the last minute."""

    def __init__(self, per_minute: int) -> None:
        self._capacity = float(per_minute)
        self._refill_per_second = per_minute / 60.0
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, key: str, now: float) -> bool:
        """Take one token for ``key`` if one is left."""
        tokens, last = self._buckets.get(key, (self._capacity, now))
        tokens = min(self._capacity, tokens + (now - last) * self._refill_per_second)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return False
        self._buckets[key] = (tokens - 1.0, now)
        return True

    def forget(self, key: str) -> None:
        """Drop the bucket of a sender that is gone (keeps memory bounded)."""
        self._buckets.pop(key, None)
