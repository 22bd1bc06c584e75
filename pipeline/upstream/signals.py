"""Run-level signals: answers that concern the whole upstream service, not one link.

Every answer has a scope (`Scope`): *this link* (gone, invalid, unusable), *this attempt*
(timeout, reset, 5xx, truncated body) or *the whole service* (`Cause`). A service-scope signal
acts once, for the whole run:

- throttling (HTTP 429, or the service relaying Douyin's "too frequent") is one shared
  cool-down for every worker, longer after each throttled answer in a row; after
  `THROTTLE_LIMIT` cool-downs in a row without a success in between, the run stops (75);
- an operator problem (cookie expired, token rejected, captcha / verification challenge,
  signature rejected, endpoint missing) stops the run at its first answer (77);
- "the service cannot reach Douyin" has no answer of its own: amagi says `抖音数据获取失败` for a
  DNS failure, a stall and a bad id alike. It is recognised as the same failure for
  `STREAK_MIN` different works in a row, with no other answer in between, once it has also
  outlasted one retry (75): see `ServiceWatch.failed`.
  The same rule stops a run whose service does not answer at all, or whose short-link host
  does not.

`ServiceWatch` is the bookkeeping: fed every attempt's result in the order they end, it says
when to cool down and when to stop. It is pure (no I/O, no clock) and owned by the client.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit, urlunsplit

from pipeline.upstream.outcomes import Cause, Outcome

# Different works failing the same way, in a row, before the run stops. A burst of requests
# in flight can fail together in one blip, so the streak must also outlast a retry (a work that
# failed, waited its backoff and failed again); without retries (--retries 0) twice as many
# works stand in for that. Requests before a stop, whatever the input size: about 8 + 32 at
# --concurrency 4 (each of the first works retried first), about `--concurrency` + a few at 8
# and above.
STREAK_MIN = 8
# Throttled answers in a row (each followed by a shared cool-down twice as long as the last,
# up to the backoff cap) before the run stops: with the defaults ~3 minutes of throttling.
THROTTLE_LIMIT = 10

# Why a run stopped, by cause: exit 77 needs someone to act; exit 75 is "re-run later".
OPERATOR_CAUSES = frozenset(
    {Cause.COOKIE, Cause.TOKEN_REJECTED, Cause.ENDPOINT, Cause.VERIFICATION, Cause.SIGNATURE}
)


class Scope(StrEnum):
    LINK = "link"
    ATTEMPT = "attempt"
    SERVICE = "service"


def scope_of(outcome: Outcome, cause: Cause | None) -> Scope:
    if cause is not None:
        return Scope.SERVICE
    if outcome in (Outcome.TRANSIENT, Outcome.RATE_LIMITED):
        return Scope.ATTEMPT
    return Scope.LINK


class Failure(StrEnum):
    """What a streak of identical failures is made of (decides the stop message)."""

    NO_ANSWER = "no_answer"  # nothing came back: refused, reset, timed out
    SERVICE = "service"  # the service answered HTTP 200 with a failure envelope
    HTTP_ERROR = "http_error"  # the service (or a proxy) answered 5xx or a broken body
    SHORT_LINK = "short_link"  # resolving a short link failed (the service was not asked)


@dataclass(frozen=True, slots=True)
class ServiceStop:
    """Why the whole run stops: one message, and whether it is temporary (75) or not (77)."""

    cause: Cause
    message: str
    short: str  # the answer's own reason, for the links' records and the client's results

    @property
    def needs_operator(self) -> bool:
        return self.cause in OPERATOR_CAUSES


def redact_url(url: str) -> str:
    """`scheme://host[:port][/path]`: no user, password, query or fragment."""
    try:
        parts = urlsplit(url)
        netloc = parts.hostname or ""
        if parts.port is not None:
            netloc += f":{parts.port}"
    except ValueError:
        return "an unparsable URL"
    if ":" in (parts.hostname or "") and not netloc.startswith("["):
        netloc = f"[{parts.hostname}]" + (f":{parts.port}" if parts.port is not None else "")
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


_OPERATOR_ADVICE = {
    Cause.COOKIE: "give the service a fresh Douyin cookie (log in to douyin.com, copy the "
    "cookie into the service's configuration, restart it)",
    Cause.TOKEN_REJECTED: "check the token (DOUYIN_API_TOKEN / --api-token) against the service's",
    Cause.ENDPOINT: "check --api-base and --api-style (seed serves /douyin/fetch_one_work, "
    "amagi /api/douyin/fetch_one_work)",
    Cause.VERIFICATION: "Douyin wants a human check for the service's account: open "
    "douyin.com with that account, pass the check, refresh the service's cookie",
    Cause.SIGNATURE: "Douyin rejected the service's request signature: update the service "
    "(its signing code is out of date) and look at its log",
}


def operator_stop(cause: Cause, reason: str, service: str) -> ServiceStop:
    advice = _OPERATOR_ADVICE.get(cause, "look at the service's log")
    message = (
        f"the upstream service at {service} answered: {reason}. Needs action: {advice}; "
        "then re-run the same command (links not attempted are still pending)"
    )
    return ServiceStop(cause, message, reason)


class ServiceWatch:
    """Feed it every attempt's end (`seen`); it answers with a stop when the run should end.

    Also keeps the throttle streak, from which the client sizes the shared cool-down."""

    def __init__(self, service: str, short_link_host: str, *, retries: bool = True) -> None:
        self.service = service
        self.short_link_host = short_link_host
        self._retries = retries
        self._key: tuple[Failure, str] | None = None
        self._works: set[str] = set()
        self._attempts = 0
        self._repeated = False
        self._throttled = 0

    def success(self) -> None:
        """An answer that shows the service works (a work, gone, invalid): streaks end."""
        self._key, self._works, self._attempts, self._repeated = None, set(), 0, False
        self._throttled = 0

    @property
    def throttle_streak(self) -> int:
        return self._throttled

    def throttled(self, where: str) -> ServiceStop | None:
        """One more throttled answer in a row (to a request started after the last
        cool-down began); a stop once there were `THROTTLE_LIMIT`."""
        self._throttled += 1
        if self._throttled < THROTTLE_LIMIT:
            return None
        message = (
            f"{where} kept rate limiting: {self._throttled} cool-downs in a row, each twice "
            "as long as the last, without one success. Likely cause: Douyin throttles the "
            "service's account or IP, or another client shares them; lower --rate, look at "
            "the service's log, and re-run the same command later"
        )
        return ServiceStop(Cause.THROTTLED, message, "kept rate limiting")

    def failed(self, work: str, kind: Failure, reason: str) -> ServiceStop | None:
        """One attempt failed for `work` with `reason`. A stop once `STREAK_MIN` different
        works in a row failed the same way and one of them failed again after its backoff
        (without retries: once twice as many works failed)."""
        key = (kind, reason if kind is not Failure.NO_ANSWER else "")
        if key != self._key:
            self._key, self._works, self._attempts, self._repeated = key, set(), 0, False
        self._repeated = self._repeated or work in self._works
        self._works.add(work)
        self._attempts += 1
        works = len(self._works)
        # Without retries no work can fail twice: twice as many works stand in for it.
        outlasted = self._repeated if self._retries else works >= 2 * STREAK_MIN
        if works < STREAK_MIN or not outlasted:
            return None
        return self._stop(kind, reason, works, self._attempts)

    def _stop(self, kind: Failure, reason: str, works: int, attempts: int) -> ServiceStop:
        seen = f"{works} links in a row ({attempts} requests)"
        if kind is Failure.NO_ANSWER:
            message = (
                f"the upstream service at {self.service} did not answer for {seen}, last: "
                f"{reason}. Is it running, and is --api-base right? Re-run the same command "
                "once it answers"
            )
            return ServiceStop(Cause.SERVICE_DOWN, message, "upstream service did not answer")
        if kind is Failure.SHORT_LINK:
            message = (
                f"short links could not be resolved at {self.short_link_host} for {seen}, "
                f"last: {reason}. The upstream service was not asked; check this machine's "
                f"access to {self.short_link_host} (or --resolve-base), then re-run the same "
                "command"
            )
            return ServiceStop(Cause.SHORT_LINKS, message, "short-link host did not answer")
        if kind is Failure.HTTP_ERROR:
            message = (
                f"the upstream service at {self.service} answered {seen} with the same "
                f"error: {reason}. The service (or a proxy in front of it) is failing: look "
                "at its log, and re-run the same command once it works"
            )
            return ServiceStop(Cause.SERVICE_FAILING, message, "upstream kept failing")
        message = (
            f"the upstream service at {self.service} failed {seen} with the same answer: "
            f"{reason}. It answers but cannot get works from Douyin; likely causes: the "
            "service cannot reach www.douyin.com (network, DNS, proxy) or its cookie is "
            "refused. Look at the service's log (amagi logs the real cause, e.g. getaddrinfo "
            "ENOTFOUND www.douyin.com) and its cookie; re-run the same command once it works"
        )
        return ServiceStop(Cause.DOUYIN_UNREACHABLE, message, "upstream kept failing")
