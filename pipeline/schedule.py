"""When a known work is due for its next statistics check.

Young works change fast and old ones barely move, so the interval grows with the work's age
(age = check time - publish time):

    age < 1 day      every hour
    age < 30 days    every day
    older            every week
    unknown age      every day

`ingest refresh --stale-after D` overrides this with one interval for every work.
"""

from __future__ import annotations

from datetime import datetime, timedelta

POLICY: tuple[tuple[timedelta, timedelta], ...] = (
    (timedelta(days=1), timedelta(hours=1)),
    (timedelta(days=30), timedelta(days=1)),
)
OLD_WORK_INTERVAL = timedelta(days=7)
UNKNOWN_AGE_INTERVAL = timedelta(days=1)
RETRY_FAILED_AFTER = timedelta(hours=1)


def check_interval(age: timedelta | None) -> timedelta:
    if age is None:
        return UNKNOWN_AGE_INTERVAL
    for younger_than, interval in POLICY:
        if age < younger_than:
            return interval
    return OLD_WORK_INTERVAL


def next_check_at(checked_at: datetime, created_at: datetime | None) -> datetime:
    age = checked_at - created_at if created_at is not None else None
    return checked_at + check_interval(age)
