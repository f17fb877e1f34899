"""Pacing requests: a thread-safe rate limiter, backoff delays and `Retry-After` parsing."""

from __future__ import annotations

import email.utils
import random
import threading
import time
from dataclasses import dataclass

MAX_RETRY_AFTER = 600.0  # a server asking for more than 10 minutes is treated as asking for 10


class RateLimiter:
    """At most `rps` request starts per second across all threads (None or 0: unlimited).

    Starts are spaced evenly (1/rps apart) rather than burst, so a server's
    per-second window never sees more than about `rps` requests.
    """

    def __init__(self, rps: float | None, clock=time.monotonic, sleep=time.sleep):
        self.interval = 1.0 / rps if rps else 0.0
        self._clock, self._sleep = clock, sleep
        self._next = 0.0
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Block until this caller may start a request; returns the seconds waited."""
        if not self.interval:
            return 0.0
        with self._lock:
            now = self._clock()
            start = max(now, self._next)
            self._next = start + self.interval
        wait = start - now
        if wait > 0:
            self._sleep(wait)
        return wait


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter: attempt k waits uniform(0, min(max, base * 2**k)).

    A server's `Retry-After` overrides the drawn delay when it asks for longer.
    """

    base: float = 1.0
    max: float = 60.0

    def delay(self, attempt: int, rng: random.Random, retry_after: float | None = None) -> float:
        drawn = rng.uniform(0.0, min(self.max, self.base * (2.0 ** attempt)))
        if retry_after is not None:
            return max(drawn, min(retry_after, MAX_RETRY_AFTER))
        return drawn


def parse_retry_after(headers) -> float | None:
    """Seconds to wait from `retry-after-ms`, or `Retry-After` (seconds or an HTTP date); None if absent."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())
