"""Short-link resolution for the amagi style: follow `v.douyin.com` redirects to an aweme_id.

Redirects are followed by hand (never `allow_redirects=True`) so that every hop is checked
before it is requested: only Douyin hosts, at most `MAX_HOPS`, and the walk stops at the first
`Location` that names a work. Bodies are never read. The HTTP side is injected (`Hop`), which
keeps this module free of sessions and lets the client put every hop through its rate limiter.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit, urlunsplit

from pipeline.inputs import parse_line
from pipeline.upstream.outcomes import Outcome
from pipeline.upstream.retry import parse_retry_after

MAX_HOPS = 5
DOUYIN_DOMAINS = ("douyin.com", "iesdouyin.com")
SHORT_HOST = "v.douyin.com"
NO_WORK_REASON = "short link did not resolve to a work"

# (method, url) -> (HTTP status, headers). Raises aiohttp/timeout errors, which the caller
# classifies as transient.
Hop = Callable[[str, str], Awaitable[tuple[int, Mapping[str, str]]]]


@dataclass(frozen=True, slots=True)
class Resolution:
    outcome: Outcome  # OK (aweme_id set), INVALID, TRANSIENT or RATE_LIMITED
    aweme_id: int | None = None
    reason: str = ""
    http_status: int | None = None
    retry_after: float | None = None


def is_douyin_host(host: str | None) -> bool:
    host = (host or "").lower().rstrip(".")
    return any(host == d or host.endswith("." + d) for d in DOUYIN_DOMAINS)


def aweme_id_from_url(url: str) -> int | None:
    """The work id a Douyin URL names; None if it names none.

    Uses the input stage's parser so a Location is read exactly like a pasted link (path ids,
    `modal_id`, `vid` on user pages, and never `mid=`, which is the music id).
    """
    links, _ = parse_line(url)
    return links[0].aweme_id if len(links) == 1 else None


def rebase(url: str, resolve_base: str | None) -> str:
    """Send `https://v.douyin.com/...` to `resolve_base` instead (a local fake in tests)."""
    parts = urlsplit(url)
    if not resolve_base or (parts.hostname or "").lower() != SHORT_HOST:
        return url
    base = urlsplit(resolve_base)
    path = base.path.rstrip("/") + parts.path
    return urlunsplit((base.scheme, base.netloc, path, parts.query, ""))


def _failure(status: int, headers: Mapping[str, str]) -> Resolution:
    if status == 429:
        retry_after = parse_retry_after(headers.get("Retry-After"))
        return Resolution(
            Outcome.RATE_LIMITED,
            reason="rate limited while resolving (HTTP 429)",
            http_status=status,
            retry_after=retry_after,
        )
    if status >= 500 or status in (403, 408):
        return Resolution(
            Outcome.TRANSIENT,
            reason=f"short link resolution failed (HTTP {status})",
            http_status=status,
        )
    return Resolution(
        Outcome.INVALID, reason=f"{NO_WORK_REASON} (HTTP {status})", http_status=status
    )


async def resolve_short_link(
    url: str, hop: Hop, *, resolve_base: str | None = None, max_hops: int = MAX_HOPS
) -> Resolution:
    """Follow redirects from `url` until a Location names a work (one attempt, no retries)."""
    if not is_douyin_host(urlsplit(url).hostname):
        return Resolution(Outcome.INVALID, reason="not a Douyin link")
    if (known := aweme_id_from_url(url)) is not None:
        return Resolution(Outcome.OK, aweme_id=known)
    current = url
    for _ in range(max_hops):
        target = rebase(current, resolve_base)
        status, headers = await hop("HEAD", target)
        if not 300 <= status < 400:
            # Some servers refuse or mishandle HEAD; GET without reading the body is the fallback.
            status, headers = await hop("GET", target)
        location = headers.get("Location")
        if not 300 <= status < 400:
            return (
                _failure(status, headers)
                if status >= 400
                else Resolution(Outcome.INVALID, reason=NO_WORK_REASON, http_status=status)
            )
        if not location:
            return Resolution(Outcome.INVALID, reason=NO_WORK_REASON, http_status=status)
        current = urljoin(current, location)  # relative to the Douyin URL, not the rebased one
        if not is_douyin_host(urlsplit(current).hostname):
            return Resolution(
                Outcome.INVALID, reason="redirect to non-Douyin host", http_status=status
            )
        if (aweme_id := aweme_id_from_url(current)) is not None:
            return Resolution(Outcome.OK, aweme_id=aweme_id, http_status=status)
    return Resolution(Outcome.INVALID, reason=f"{NO_WORK_REASON} (more than {max_hops} redirects)")
