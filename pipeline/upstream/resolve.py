"""Short-link resolution for the amagi style: follow `v.douyin.com` redirects to an aweme_id.

Redirects are followed by hand (never `allow_redirects=True`) so that every hop is checked
before it is requested, and the walk stops at the first `Location` that names a work. Bodies are
never read. The HTTP side is injected (`Hop`), which keeps this module free of sessions and lets
the client put every hop through its rate limiter.

Where requests may go: only the short-link host itself, `https://v.douyin.com` (or, when
`--resolve-base` is set, that base instead, under its path prefix). Douyin's other hosts
(`www.iesdouyin.com`, `www.douyin.com`) are never requested: a Location there is only read for
the id it names. Paths are normalised first (`%2e%2e`, `..`, `.`, `//`), and one that climbs
above the root or hides a separator (`%2f`, `%5c`, `\\`) is refused, so no redirect can leave
the resolve base's path prefix, host or port.
"""

from __future__ import annotations

import re
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
_DEFAULT_PORTS = {"http": 80, "https": 443}
_HIDDEN_SEPARATOR = re.compile(r"%2f|%5c|\\", re.IGNORECASE)
_ENCODED_DOT = re.compile(r"%2e", re.IGNORECASE)
_HOST_CHARS = re.compile(r"[^a-z0-9.\-\[\]:]")

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


def safe_origin(url: str) -> str:
    """`scheme://host[:port]` of a URL, for messages: never its userinfo, path or query."""
    try:
        parts = urlsplit(url.strip())
        host = _HOST_CHARS.sub("", (parts.hostname or "").lower())[:100]
        port = parts.port
    except ValueError:
        return "an unparsable URL"
    scheme = re.sub(r"[^a-z0-9+.\-]", "", parts.scheme.lower())[:20]
    origin = f"//{host}" + (f":{port}" if port is not None else "") if host else ""
    if not scheme:
        return origin or "a path on the same host"  # relative, or scheme-relative
    return f"{scheme}:{origin}"


def aweme_id_from_url(url: str) -> int | None:
    """The work id a Douyin URL names; None if it names none.

    Uses the input stage's parser so a Location is read exactly like a pasted link (path ids,
    `modal_id`, `vid` on user pages, and never `mid=`, which is the music id).
    """
    links, _ = parse_line(url)
    return links[0].aweme_id if len(links) == 1 else None


def normal_path(path: str) -> str | None:
    """`path` with `%2e`, `.`, `..` and empty segments resolved; None if it climbs above the
    root or hides a separator (`%2f`, `%5c`, a backslash), which no real short link does."""
    if _HIDDEN_SEPARATOR.search(path):
        return None
    segments: list[str] = []
    for segment in _ENCODED_DOT.sub(".", path).split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if not segments:
                return None
            segments.pop()
        else:
            segments.append(segment)
    trailing = "/" if path.endswith("/") and segments else ""
    return "/" + "/".join(segments) + trailing


def request_url(url: str, resolve_base: str | None) -> str | None:
    """Where to send a request for `url`, a URL on the short-link host; None when it must not
    be requested (another host, port or scheme, credentials, or a path that escapes).

    With `resolve_base` the request goes there instead (a local fake in tests, or a proxy),
    with the short link's path appended to the base's own path."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    if (
        (parts.hostname or "").lower() != SHORT_HOST
        or parts.scheme.lower() not in _DEFAULT_PORTS
        or port not in (None, _DEFAULT_PORTS[parts.scheme.lower()])
        or parts.username is not None
        or parts.password is not None
    ):
        return None
    path = normal_path(parts.path or "/")
    if path is None:
        return None
    if not resolve_base:
        return urlunsplit(("https", SHORT_HOST, path, parts.query, ""))
    base = urlsplit(resolve_base)
    return urlunsplit((base.scheme, base.netloc, base.path.rstrip("/") + path, parts.query, ""))


def _back_from_base(url: str, resolve_base: str | None) -> str | None:
    """The short-link URL that `url`, a URL under the resolve base, stands for (a proxy that
    rewrites its own redirects); None for any other URL."""
    if not resolve_base:
        return None
    try:
        parts, base = urlsplit(url), urlsplit(resolve_base)
        same_origin = (parts.scheme.lower(), parts.hostname, parts.port) == (
            base.scheme.lower(),
            base.hostname,
            base.port,
        )
    except ValueError:
        return None
    prefix = base.path.rstrip("/")
    path = normal_path(parts.path or "/")
    if not same_origin or path is None or not (path == prefix or path.startswith(prefix + "/")):
        return None
    return urlunsplit(("https", SHORT_HOST, path[len(prefix) :] or "/", parts.query, ""))


def _failure(status: int, headers: Mapping[str, str]) -> Resolution:
    if status == 429:
        retry_after = parse_retry_after(headers.get("Retry-After"))
        return Resolution(
            Outcome.RATE_LIMITED,
            reason="short link lookup rate limited (HTTP 429)",
            http_status=status,
            retry_after=retry_after,
        )
    if status >= 500 or status in (403, 408):
        return Resolution(
            Outcome.TRANSIENT,
            reason=f"short link lookup failed (HTTP {status})",
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
    current, status = url, None
    for _ in range(max_hops):
        target = request_url(current, resolve_base)
        if target is None:
            return Resolution(
                Outcome.INVALID,
                reason=f"{NO_WORK_REASON} (redirected to {safe_origin(current)}, not followed)",
                http_status=status,
            )
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
        # A Location is read relative to the short-link URL, not the rebased one, so a relative
        # Location cannot leave the resolve base's path prefix; an absolute one that points
        # into the resolve base stands for the short-link URL it rebases from.
        current = _back_from_base(urljoin(target, location), resolve_base) or urljoin(
            current, location
        )
        if not is_douyin_host(urlsplit(current).hostname):
            return Resolution(
                Outcome.INVALID,
                reason=f"redirect to non-Douyin host ({safe_origin(current)})",
                http_status=status,
            )
        if (aweme_id := aweme_id_from_url(current)) is not None:
            return Resolution(Outcome.OK, aweme_id=aweme_id, http_status=status)
    return Resolution(Outcome.INVALID, reason=f"{NO_WORK_REASON} (more than {max_hops} redirects)")
