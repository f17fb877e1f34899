"""Rate limiter spacing, backoff bounds and Retry-After parsing, on a fake clock."""

import random

from cot_transplant.generate.ratelimit import Backoff, RateLimiter, parse_retry_after


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, s):
        self.now += s


def test_rate_limiter_spaces_starts():
    clock = FakeClock()
    limiter = RateLimiter(4.0, clock=clock, sleep=clock.sleep)
    starts = []
    for _ in range(5):
        limiter.acquire()
        starts.append(clock.now)
    assert starts == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert RateLimiter(None).acquire() == 0.0


def test_backoff_bounds_and_retry_after():
    rng = random.Random(0)
    b = Backoff(base=0.5, max=3.0)
    for attempt in range(8):
        assert 0.0 <= b.delay(attempt, rng) <= min(3.0, 0.5 * 2 ** attempt)
    assert b.delay(0, rng, retry_after=7.0) == 7.0  # the server's wait wins when longer
    assert b.delay(5, random.Random(1), retry_after=0.0) > 0.0


def test_parse_retry_after():
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0  # in the past
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None and parse_retry_after(None) is None
