"""What one upstream fetch ends as: an outcome class plus, for `ok`, the work's detail."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pipeline.rows import JsonText


class Outcome(StrEnum):
    """The outcome classes of UPSTREAM.md §1.3; every response maps to exactly one."""

    OK = "ok"
    GONE = "gone"
    INVALID = "invalid"
    RATE_LIMITED = "rate_limited"
    TRANSIENT = "transient"
    OPERATOR = "operator"
    # The service answered, but with something that can never be stored for this link: a body
    # that is not strict JSON, too large, a redirect, another work. Asking again returns the
    # same, so it is recorded as a permanent failure of this link.
    UNUSABLE = "unusable"

    @property
    def retryable(self) -> bool:
        return self in (Outcome.RATE_LIMITED, Outcome.TRANSIENT)


class Cause(StrEnum):
    """Why an answer concerns the whole service, not one link (`pipeline.upstream.signals`)."""

    COOKIE = "cookie_expired"  # amagi: 接口返回内容为空 (Douyin answered an empty body)
    TOKEN_REJECTED = "token_rejected"  # noqa: S105 - HTTP 401/403 (or code 401/403, seed)
    ENDPOINT = "endpoint_missing"  # HTTP 404/405: wrong --api-base or --api-style
    VERIFICATION = "verification_challenge"  # captcha / verification / risk control
    SIGNATURE = "signature_rejected"  # the service's request signature was refused
    THROTTLED = "throttled"  # HTTP 429, or the service relays "too frequent"
    # Recognised from a streak, never from one answer:
    DOUYIN_UNREACHABLE = "douyin_unreachable"  # the same failure for many works in a row
    SERVICE_DOWN = "service_down"  # no answer at all for many links in a row
    SERVICE_FAILING = "service_failing"  # the same 5xx or broken body for many works in a row
    SHORT_LINKS = "short_links_unreachable"  # the short-link host failed many links in a row


@dataclass(frozen=True, slots=True)
class FetchResult:
    """The final result for one share link, after retries.

    `outcome` is RATE_LIMITED only when retries ran out while the upstream kept answering 429;
    the orchestrator records that (like TRANSIENT) as a temporary failure.
    """

    outcome: Outcome
    aweme_detail: dict[str, Any] | None  # only for OK
    # The work asked for (the link's id, or the id its short link resolved to); only for an OK
    # answer to a seed-style short link, which the service resolves itself, the answer's id.
    aweme_id: int | None
    reason: str  # short, English, secret-free; "" for OK
    attempts: int  # tries made: each short-link resolution try and each detail request counts 1
    http_status: int | None  # of the last response; None when none arrived
    # The service was stopped (parked) before this link got an answer of its own: the link is
    # given to another service or left pending, never recorded (pipeline.upstream.pool).
    cut_short: bool = False
    # Only for OK: the body's text to store as received (`Classification.payload`); None when
    # only `aweme_detail` can be stored faithfully.
    payload: JsonText | None = None
