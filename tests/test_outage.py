"""The outage policy on its own: which errors are waited out, and how long (a fake clock)."""

from __future__ import annotations

import logging

import psycopg.errors
import pytest
from sqlalchemy.exc import DataError, InternalError, OperationalError, ProgrammingError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from pipeline.db.outage import DatabaseUnavailable, OutageGuard, is_transient


def _wrapped(cls: type[Exception], orig: BaseException) -> Exception:
    return cls("INSERT …", {}, orig)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (_wrapped(OperationalError, ConnectionRefusedError("refused")), True),
        (_wrapped(OperationalError, psycopg.errors.AdminShutdown("terminating")), True),
        (_wrapped(OperationalError, psycopg.errors.CannotConnectNow("starting up")), True),
        (_wrapped(OperationalError, psycopg.errors.DeadlockDetected("deadlock")), True),
        (_wrapped(OperationalError, psycopg.errors.SerializationFailure("serialize")), True),
        (_wrapped(OperationalError, psycopg.errors.TooManyConnections("too many")), True),
        (PoolTimeout("pool exhausted"), True),
        # Caused by the data: waiting would change nothing.
        (_wrapped(OperationalError, psycopg.errors.StatementTooComplex("stack depth")), False),
        (_wrapped(DataError, psycopg.errors.InvalidTextRepresentation("Token NaN")), False),
        (_wrapped(DataError, psycopg.errors.NumericValueOutOfRange("bigint")), False),
        (_wrapped(ProgrammingError, psycopg.errors.UndefinedColumn("no such column")), False),
        (_wrapped(InternalError, psycopg.errors.InternalError_("XX000")), False),
        (ValueError("bad row"), False),
        (RecursionError("too deep"), False),
    ],
)
def test_only_errors_of_an_unavailable_server_are_transient(
    error: Exception, transient: bool
) -> None:
    assert is_transient(error) is transient


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def _down() -> OperationalError:
    return _wrapped(OperationalError, ConnectionRefusedError("connection refused"))  # type: ignore[return-value]


def test_an_outage_is_waited_out_with_capped_backoff_and_logged_once_each_way(
    caplog: pytest.LogCaptureFixture,
) -> None:
    t = FakeTime()
    guard = OutageGuard(120, first_delay_s=0.5, max_delay_s=4, clock=t.clock, sleep=t.sleep)
    calls = {"n": 0}

    def flaky() -> str:
        calls["n"] += 1
        if t.now < 20:
            raise _down()
        return "ok"

    with caplog.at_level(logging.WARNING):
        assert guard.call("batch commit", flaky) == "ok"
        assert guard.call("batch commit", flaky) == "ok"
    assert t.sleeps[:4] == [0.5, 1, 2, 4]
    assert max(t.sleeps) == 4
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert messages[0].startswith("database unavailable during the batch commit")
    assert messages[1].startswith("database is back after")


def test_past_the_window_the_call_gives_up_with_a_clear_error() -> None:
    t = FakeTime()
    guard = OutageGuard(30, first_delay_s=1, max_delay_s=8, clock=t.clock, sleep=t.sleep)

    def down() -> None:
        raise _down()

    with pytest.raises(DatabaseUnavailable, match=r"unreachable for 30 s .*seconds 30\)"):
        guard.call("run start", down)
    assert sum(t.sleeps) == 30  # the last wait is cut to the window


def test_a_data_error_is_not_retried() -> None:
    t = FakeTime()
    guard = OutageGuard(30, clock=t.clock, sleep=t.sleep)

    def rejected() -> None:
        raise ValueError("bad row")

    with pytest.raises(ValueError, match="bad row"):
        guard.call("batch commit", rejected)
    assert t.sleeps == []


def test_an_error_without_a_message_is_still_reported() -> None:
    t = FakeTime()
    guard = OutageGuard(1, first_delay_s=1, clock=t.clock, sleep=t.sleep)

    def reset() -> None:
        raise _wrapped(OperationalError, ConnectionResetError())

    with pytest.raises(DatabaseUnavailable, match=r"seconds 1\): $"):
        guard.call("heartbeat", reset)
