"""Retry policy: a bounded number of attempts, capped exponential backoff with full jitter,
and a capped `Retry-After`.

Why not `stamina`: our attempts end in classified *values* (an Outcome), not exceptions; the
wait after a 429 is a pause of the shared rate limiter rather than a per-call sleep; and the
client's clock and sleep are injected so tests never wait. The loop that applies this policy
is a dozen lines in `client.py`; this module holds the arithmetic, which is pure.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """`retries` extra attempts after the first (0 = try once)."""

    retries: int = 4
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    max_retry_after_s: float = 60.0

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ValueError("retries must be >= 0")
        if self.backoff_base_s < 0 or self.backoff_max_s < 0 or self.max_retry_after_s < 0:
            raise ValueError("backoff and Retry-After limits must be >= 0")

    @property
    def max_attempts(self) -> int:
        return self.retries + 1

    def backoff(self, failed_attempts: int, rng: random.Random | None = None) -> float:
        """Full jitter (AWS architecture blog): uniform in [0, min(max, base * 2**(n-1))]."""
        ceiling = min(self.backoff_max_s, self.backoff_base_s * 2 ** max(0, failed_attempts - 1))
        return (rng or random).uniform(0.0, ceiling)

    def cap_retry_after(self, seconds: float) -> float:
        return min(max(0.0, seconds), self.max_retry_after_s)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header: delta-seconds or an HTTP date (RFC 9110).

    Returns None when the header is absent or unparsable (the caller falls back to backoff).
    """
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
