"""The two upstream contracts (UPSTREAM.md §1): how to ask for one work, and how to read the answer.

Both are pure: `build_request` returns a path and query, `classify` maps (HTTP status, body bytes,
headers) to one outcome class. No I/O here, so every real envelope in the fixtures is a unit test.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from pipeline.douyin import received_text
from pipeline.inputs import ShareLink, clean_text
from pipeline.rows import JsonText
from pipeline.upstream.decode import BodyProblem, Reading, read_body
from pipeline.upstream.outcomes import Cause, Outcome
from pipeline.upstream.resolve import safe_origin
from pipeline.upstream.retry import parse_retry_after
from pipeline.upstream.signals import Scope, scope_of

# amagi's wording when Douyin answered with an empty body: its cookie is missing or expired.
EMPTY_BODY_MARK = "接口返回内容为空"
_COOKIE_WORDING = re.compile(
    r"接口返回内容为空|cookie|\bck\b|ck\s*可能已经?失效|ck\s*已?失效", re.I
)
# Service-wide wording in a failure's message or error description. No captured Douyin or
# amagi answer shows a captcha, a refused signature or relayed throttling for the detail
# endpoint: amagi relays Douyin's own `status_msg` as `message` (verbatim, no `error`), and
# the wording below is what amagi itself writes for these situations (its Bilibili error-code
# map: 验证码错误, 风控校验失败 (UA 或 wbi 参数不合法), 请求被拦截 (客户端 ip 被服务端风控),
# 请求过于频繁，请稍后再试, 访问频次异常，请勿频繁操作; its Douyin log line 疑似触发验证码;
# 签名生成失败). Unverified for Douyin itself; see docs/operations.md.
_SIGNATURE_WORDING = re.compile(r"签名|signature|a_bogus|x-bogus|\bwbi\b", re.I)
_VERIFICATION_WORDING = re.compile(
    r"验证码|人机验证|安全验证|滑块|风控|captcha|\bverify\b|verification", re.I
)
_THROTTLE_WORDING = re.compile(
    r"频繁|频次|太快|限流|rate[ _-]?limit|too many requests|too frequent", re.I
)
# amagi writes `原因：<token>` (ASCII token) only for Douyin's filter_detail.filter_reason:
# status_self_see, status_deleted, item_not_exist, ... — the work is gone for good.
_GONE_STATUS = re.compile(r"原因\s*[:：]\s*([a-z][a-z0-9_]{0,39})")
_URL = re.compile(r"https?://\S+")
_SAFE_REASON = re.compile(r"[^a-z0-9_]")
COOKIE_REASON = "upstream service's Douyin cookie is missing or expired"
NO_DETAIL_REASON = "upstream returned no detail"


@dataclass(frozen=True, slots=True)
class Classification:
    outcome: Outcome
    detail: dict[str, Any] | None = None  # the aweme_detail, only for OK
    reason: str = ""  # short, English, secret-free
    retry_after: float | None = None  # seconds, uncapped, from a Retry-After header
    aweme_id: int | None = None  # when the body names the work
    cause: Cause | None = None  # set when the answer concerns the whole service
    # Only for OK: the body's text, to be stored as received (None: store `detail` encoded).
    payload: JsonText | None = None

    @property
    def scope(self) -> Scope:
        """This link, this attempt, or the whole service (`pipeline.upstream.signals`)."""
        return scope_of(self.outcome, self.cause)


class Contract(Protocol):
    """One upstream API style."""

    @property
    def needs_aweme_id(self) -> bool:
        """True when the request needs a numeric id (short links must be resolved first)."""
        ...

    def build_request(self, link: ShareLink, aweme_id: int | None) -> tuple[str, dict[str, str]]:
        """Path (appended to api_base) and query parameters for one work."""
        ...

    def classify(self, status: int, body: bytes, headers: Mapping[str, str]) -> Classification:
        """The outcome class of one HTTP response."""
        ...


def _clean(text: object, limit: int = 160) -> str:
    """Upstream free text made safe for a reason: no URLs (they may be signed), one line, short."""
    if not isinstance(text, str):
        return ""
    text = clean_text(" ".join(_URL.sub("<url>", text).split()))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _unusable_body(problem: BodyProblem) -> Classification:
    outcome = Outcome.UNUSABLE if problem.permanent else Outcome.TRANSIENT
    return Classification(outcome, reason=problem.reason)


def _as_id(value: object) -> int | None:
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _by_status(status: int, headers: Mapping[str, str]) -> Classification | None:
    """Outcomes decided by the HTTP status alone, common to both styles."""
    if 300 <= status < 400:
        # Redirects are never followed (the token must go nowhere but --api-base); the reason
        # names only where it pointed, never the URL (it may carry a path, query or password).
        location = headers.get("Location")
        where = f" to {safe_origin(location)}" if location else " without a Location"
        return Classification(
            Outcome.UNUSABLE,
            reason=f"upstream redirected (HTTP {status}){where}; redirects are not followed, "
            "check the API base URL",
        )
    if status == 429:
        retry_after = parse_retry_after(headers.get("Retry-After"))
        return Classification(
            Outcome.RATE_LIMITED,
            reason="rate limited (HTTP 429)",
            retry_after=retry_after,
            cause=Cause.THROTTLED,
        )
    if status in (401, 403):
        return Classification(
            Outcome.OPERATOR,
            reason=f"upstream rejected the API token (HTTP {status})",
            cause=Cause.TOKEN_REJECTED,
        )
    if status in (404, 405):
        # The route itself is missing: wrong --api-base or --api-style, not a missing work.
        return Classification(
            Outcome.OPERATOR,
            reason=(
                f"upstream endpoint not found (HTTP {status}): check the API base URL and API style"
            ),
            cause=Cause.ENDPOINT,
        )
    if status >= 500:
        return Classification(
            Outcome.TRANSIENT,
            reason=f"upstream error (HTTP {status})",
            retry_after=parse_retry_after(headers.get("Retry-After")),
        )
    return None


# Where the detail lies in the envelope of either contract: `data.aweme_detail`.
DETAIL_PATH = ("data", "aweme_detail")


def _from_douyin_body(data: object, body: bytes, reading: Reading) -> Classification:
    """Read a raw Douyin detail body (`{aweme_detail, filter_detail?, status_code}`), found
    at `data` in `body`, the envelope as received."""
    if not isinstance(data, dict):
        return Classification(Outcome.TRANSIENT, reason=NO_DETAIL_REASON)
    detail = data.get("aweme_detail")
    if isinstance(detail, dict):
        text = received_text(body, reading)
        return Classification(
            Outcome.OK,
            detail=detail,
            aweme_id=_as_id(detail.get("aweme_id")),
            payload=None if text is None else JsonText(text, DETAIL_PATH),
        )
    if detail is not None:
        # A list, a string, a number: the same body comes back however often it is asked for.
        return Classification(
            Outcome.UNUSABLE,
            reason=f"upstream aweme_detail is {_json_type(detail)}, not an object",
        )
    filtered = data.get("filter_detail")
    if isinstance(filtered, dict) and isinstance(filtered.get("filter_reason"), str):
        why = _SAFE_REASON.sub("", filtered["filter_reason"].lower())[:40] or "filtered"
        return Classification(
            Outcome.GONE, reason=f"gone: {why}", aweme_id=_as_id(filtered.get("aweme_id"))
        )
    code = data.get("status_code")
    suffix = f" (status_code {code})" if isinstance(code, int) and code != 0 else ""
    return Classification(Outcome.TRANSIENT, reason=NO_DETAIL_REASON + suffix)


def _json_type(value: object) -> str:
    names = {list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return names.get(type(value), type(value).__name__)


def _bad_request(doc: object, status: int) -> Classification:
    hint = _clean(doc.get("message")) if isinstance(doc, dict) else ""
    return Classification(
        Outcome.INVALID,
        reason=f"upstream rejected the request (HTTP {status})" + (f": {hint}" if hint else ""),
    )


def _service_wide(text: str, hint: str) -> Classification | None:
    """A failure whose words say it concerns the whole service (cookie, captcha, signature,
    throttling), or None. `hint` is the service's own words, cleaned, for the reason."""
    said = f": {hint}" if hint else ""
    if _SIGNATURE_WORDING.search(text):
        return Classification(
            Outcome.OPERATOR,
            reason=f"Douyin rejected the service's request signature{said}",
            cause=Cause.SIGNATURE,
        )
    if _VERIFICATION_WORDING.search(text):
        return Classification(
            Outcome.OPERATOR,
            reason=f"upstream relayed a captcha / verification challenge{said}",
            cause=Cause.VERIFICATION,
        )
    if _COOKIE_WORDING.search(text):
        return Classification(Outcome.OPERATOR, reason=COOKIE_REASON, cause=Cause.COOKIE)
    if _THROTTLE_WORDING.search(text):
        return Classification(
            Outcome.RATE_LIMITED,
            reason=f"upstream relayed rate limiting{said}",
            cause=Cause.THROTTLED,
        )
    return None


_MALFORMED = Classification(Outcome.TRANSIENT, reason="malformed JSON in upstream response")


@dataclass(frozen=True, slots=True)
class SeedContract:
    """`GET /douyin/fetch_one_work?url=<share url>` (spec/fetch_one_work.txt)."""

    needs_aweme_id: bool = False

    def build_request(self, link: ShareLink, aweme_id: int | None) -> tuple[str, dict[str, str]]:
        return "/douyin/fetch_one_work", {"url": link.url}

    def classify(self, status: int, body: bytes, headers: Mapping[str, str]) -> Classification:
        if (by_status := _by_status(status, headers)) is not None:
            return by_status
        doc, reading = read_body(body)
        if status == 400:
            return _bad_request(doc, status)
        if status != 200:
            return Classification(Outcome.TRANSIENT, reason=f"unexpected HTTP status {status}")
        if isinstance(doc, BodyProblem):
            return _unusable_body(doc)
        if not isinstance(doc, dict):
            return _MALFORMED
        code, data, message = doc.get("code"), doc.get("data"), doc.get("message")
        if (
            code in (0, 200)
            and isinstance(data, dict)
            and isinstance(data.get("aweme_detail"), dict)
        ):
            return _from_douyin_body(data, body, reading)
        if code == 429:
            return Classification(
                Outcome.RATE_LIMITED,
                reason="rate limited (upstream code 429)",
                cause=Cause.THROTTLED,
            )
        if code in (401, 403):
            return Classification(
                Outcome.OPERATOR,
                reason=f"upstream rejected the API token (code {code})",
                cause=Cause.TOKEN_REJECTED,
            )
        if isinstance(message, str) and (wide := _service_wide(message, _clean(message))):
            return wide
        if code == 400:
            return _bad_request(doc, 400)
        if code in (0, 200):
            return _from_douyin_body(data, body, reading)
        hint = _clean(message)
        return Classification(
            Outcome.TRANSIENT,
            reason=f"upstream failure (code {code})" + (f": {hint}" if hint else ""),
        )


@dataclass(frozen=True, slots=True)
class AmagiContract:
    """`GET /api/douyin/fetch_one_work?aweme_id=<id>` (@ikenxuan/amagi 5.x/6.x).

    amagi reports failures as HTTP 200 + `success: false`, so the decision is made on `success`,
    never on the status. `success: true` with a null `aweme_detail` and no `filter_detail` is
    TRANSIENT (retried, then recorded as a failure to retry in a later run), not GONE: nothing
    says the work is gone, and a wrong `gone` would stop the pipeline from ever trying it again.
    """

    needs_aweme_id: bool = True

    def build_request(self, link: ShareLink, aweme_id: int | None) -> tuple[str, dict[str, str]]:
        if aweme_id is None:
            raise ValueError("amagi needs an aweme_id: resolve the share link first")
        return "/api/douyin/fetch_one_work", {"aweme_id": str(aweme_id)}

    def classify(self, status: int, body: bytes, headers: Mapping[str, str]) -> Classification:
        doc, reading = read_body(body)
        decided_by_status = status in (401, 403, 429) or 300 <= status < 400
        if decided_by_status or not (isinstance(doc, dict) and "success" in doc):
            if (by_status := _by_status(status, headers)) is not None:
                return by_status
            if status == 400:
                return _bad_request(doc, status)
            if status != 200:
                return Classification(Outcome.TRANSIENT, reason=f"unexpected HTTP status {status}")
            return _unusable_body(doc) if isinstance(doc, BodyProblem) else _MALFORMED
        if doc["success"] is True:
            return _from_douyin_body(doc.get("data"), body, reading)
        error = doc.get("error")
        # Only errorDescription and message are read: error.requestUrl is a signed URL.
        description = error.get("errorDescription") if isinstance(error, dict) else None
        text = f"{description or ''} {doc.get('message') or ''}"
        if gone := _GONE_STATUS.search(text):
            return Classification(Outcome.GONE, reason=f"gone: {gone.group(1)}")
        if EMPTY_BODY_MARK in text:
            return Classification(Outcome.OPERATOR, reason=COOKIE_REASON, cause=Cause.COOKIE)
        # The service's own words, both of them: the message (Douyin's status_msg when amagi
        # relays one) and the error description (e.g. 原因：item_not_exist), never requestUrl.
        said = [w for w in (_clean(doc.get("message")), _clean(description)) if w]
        hint = " | ".join(dict.fromkeys(said))
        if wide := _service_wide(text, hint):
            return wide
        return Classification(
            Outcome.TRANSIENT, reason="upstream reported a failure" + (f": {hint}" if hint else "")
        )
