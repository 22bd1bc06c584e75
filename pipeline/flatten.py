"""One `aweme_detail` dict -> frozen, typed rows (UPSTREAM.md §3). Pure: no I/O, no clock, no DB.

Douyin adds, drops and retypes fields all the time, so every read is defensive: a missing key,
`null`, or a value of the wrong type is "unknown" (`None`), never an exception. The only
exception for bad data is `NotAWork`, when no usable `aweme_id` exists.

Coercion rules, applied everywhere:
- integers: an `int` (never a `bool`), an integral `float`, or an ASCII numeric string; counts
  must be 0..2**63-1 (BIGINT); columns stored as INTEGER must fit int32; anything else is None.
- ids (uid, music id, hashtag id): a numeric string, or an `int` below 2**53. amagi
  re-serialises JSON through JavaScript numbers, so a larger `int` may be rounded
  (7049808807056149285 -> 7049808807056150000); only the string twins are trusted for those.
- strings: non-`str` and `""` are None (only `description` defaults to ""). NUL characters are
  removed and lone surrogates replaced, because PostgreSQL TEXT cannot store either.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from pipeline.rows import (
    AuthorRow,
    FlatWork,
    HashtagRow,
    ImageRow,
    MentionRow,
    MusicRow,
    StatsRow,
    WorkRow,
)

__all__ = [
    "AuthorRow",
    "FlatWork",
    "HashtagRow",
    "ImageRow",
    "MentionRow",
    "MusicRow",
    "NotAWork",
    "StatsRow",
    "WorkRow",
    "flatten",
]

INT64_MAX = 2**63 - 1
INT32_MAX = 2**31 - 1
JS_SAFE_INT = 2**53  # integers at or above this may have been rounded by a JavaScript hop

_INT_TEXT = re.compile(r"-?[0-9]{1,20}")  # int() alone would also take " 1", "1_0" and "١"
_ID_TEXT = re.compile(r"[0-9]{1,19}")
_AWEME_ID_TEXT = re.compile(r"[1-9][0-9]{14,19}")  # 15-20 digits (19 today)
_AWEME_ID_MIN = 10**14
# create_time bounds: Douyin launched in 2016, and aweme_id keeps create_time in its top 32 bits,
# so a later timestamp could not come with an int64 id.
_EARLIEST_CREATE_TIME = 1451606400  # 2016-01-01T00:00:00Z
_LATEST_CREATE_TIME = 2**31 - 1
_VIDEO_AWEME_TYPES = (0, 4, 55)  # UPSTREAM.md §3; 4 and 55 appear in older data
_ARTICLE_AWEME_TYPE = 163
_VIDEO_MEDIA_TYPE = 4
_HASHTAG, _MENTION = 1, 0  # text_extra types; others (5 = search keyword, ...) are ignored


class NotAWork(ValueError):
    """The payload has no usable `aweme_id` (missing, not a 15-20 digit number, outside
    signed int64, or a number that may have been rounded), or it is not a mapping at all."""


def _obj(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _items(value: object) -> list[Mapping[str, Any]]:
    """The mappings in a JSON array; other entries (null, strings, ...) are skipped."""
    if not isinstance(value, list | tuple):
        return []
    return [item for item in value if isinstance(item, Mapping)]


def _clean(text: str) -> str:
    text = text.replace("\x00", "") if "\x00" in text else text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates from a "\udxxx" JSON escape
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def _text(value: object) -> str | None:
    return (_clean(value) or None) if isinstance(value, str) else None


def _int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if isinstance(value, str) and _INT_TEXT.fullmatch(value):
        return int(value)
    return None


def _ranged(value: object, low: int, high: int) -> int | None:
    number = _int(value)
    return number if number is not None and low <= number <= high else None


def _count(value: object) -> int | None:
    return _ranged(value, 0, INT64_MAX)


def _small(value: object) -> int | None:
    """A value stored in an INTEGER (int32) column."""
    return _ranged(value, -INT32_MAX - 1, INT32_MAX)


def _offset(value: object) -> int | None:
    return _ranged(value, 0, INT32_MAX)


def _pixels(value: object) -> int | None:
    return _ranged(value, 1, INT32_MAX)  # 0 means "not reported"


def _id(value: object) -> int | None:
    """A positive int64 id from its string form, or from an int too small to have been rounded."""
    if isinstance(value, str) and _ID_TEXT.fullmatch(value):
        number = int(value)
        return number if 0 < number <= INT64_MAX else None
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < JS_SAFE_INT:
        return value
    return None


def _bool(value: object) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):  # Douyin writes some flags as 0/1
        return bool(value)
    return None


def _aweme_id_of(value: object) -> int | None:
    if isinstance(value, str):
        number = int(value) if _AWEME_ID_TEXT.fullmatch(value) else None
        return number if number is not None and number <= INT64_MAX else None
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    # A larger int may have been rounded on its way through JavaScript (amagi).
    return value if _AWEME_ID_MIN <= value < JS_SAFE_INT else None


def _aweme_id(detail: Mapping[str, Any]) -> int:
    # `group_id` comes last: it can name another work (video 7253290037918354691 carries
    # group_id 7253008209626156349), so an exact `aweme_id` of either type is preferred.
    for value in (detail.get("aweme_id"), detail.get("group_id")):
        if (aweme_id := _aweme_id_of(value)) is not None:
            return aweme_id
    raise NotAWork("no usable aweme_id (need a 15-20 digit id string that fits int64)")


def _uri(*images: object) -> str | None:
    """The first `uri` among image objects such as avatar_thumb / avatar_medium."""
    for image in images:
        if uri := _text(_obj(image).get("uri")):
            return uri
    return None


def _first_url(value: object) -> str | None:
    if isinstance(value, list | tuple):
        for url in value:
            if text := _text(url):
                return text
    return None


def _canonical_url(value: object) -> str | None:
    text = _text(value)
    if text is None:
        return None
    try:
        parts = urlsplit(text.strip())
        host = parts.hostname
        port = parts.port
    except ValueError:  # e.g. an unclosed IPv6 bracket or a non-numeric port
        return None
    if parts.scheme.lower() not in ("http", "https") or not host:
        return None
    host = f"[{host}]" if ":" in host else host  # IPv6 literal
    netloc = f"{host}:{port}" if port is not None else host
    return _clean(f"{parts.scheme.lower()}://{netloc}{parts.path}")


def _created_at(value: object) -> datetime | None:
    seconds = _ranged(value, _EARLIEST_CREATE_TIME, _LATEST_CREATE_TIME)
    return None if seconds is None else datetime.fromtimestamp(seconds, tz=UTC)


def _kind(has_images: bool, aweme_type: int | None, media_type: int | None) -> str:
    # No single field is reliable (UPSTREAM.md §3): an album is a work with images.
    if has_images:
        return "image_album"
    if aweme_type == _ARTICLE_AWEME_TYPE:
        return "article"
    if aweme_type in _VIDEO_AWEME_TYPES or media_type == _VIDEO_MEDIA_TYPE:
        return "video"
    return "other"


def _author(author: Mapping[str, Any], seen_at: datetime) -> AuthorRow | None:
    uid = _id(author.get("uid"))
    if uid is None:
        return None
    return AuthorRow(
        uid=uid,
        sec_uid=_text(author.get("sec_uid")),
        unique_id=_text(author.get("unique_id")),
        short_id=_text(author.get("short_id")),
        nickname=_text(author.get("nickname")),
        signature=_text(author.get("signature")),
        avatar_uri=_uri(
            author.get("avatar_thumb"), author.get("avatar_medium"), author.get("avatar_larger")
        ),
        verification_type=_small(author.get("verification_type")),
        custom_verify=_text(author.get("custom_verify")),
        enterprise_verify_reason=_text(author.get("enterprise_verify_reason")),
        follower_count=_count(author.get("follower_count")),
        following_count=_count(author.get("following_count")),
        total_favorited=_count(author.get("total_favorited")),
        seen_at=seen_at,
    )


def _music(music: Mapping[str, Any]) -> MusicRow | None:
    # Never the numeric `music.id`: amagi rounds it.
    music_id = _id(music.get("id_str"))
    if music_id is None:
        music_id = _id(music.get("mid"))
    if music_id is None:
        return None
    return MusicRow(
        music_id=music_id,
        title=_text(music.get("title")),
        author_name=_text(music.get("author")),
        album=_text(music.get("album")),
        duration_s=_ranged(music.get("duration"), 0, INT32_MAX),
        is_original=_bool(music.get("is_original")),
        owner_uid=_id(music.get("owner_id")),
        owner_sec_uid=_text(music.get("sec_uid")),
        owner_nickname=_text(music.get("owner_nickname")),
        cover_uri=_uri(music.get("cover_thumb"), music.get("cover_medium"), music.get("cover_hd")),
    )


def _stats(statistics: object, aweme_id: int, captured_at: datetime) -> StatsRow | None:
    if not isinstance(statistics, Mapping):
        return None
    return StatsRow(
        aweme_id=aweme_id,
        captured_at=captured_at,
        digg_count=_count(statistics.get("digg_count")),
        comment_count=_count(statistics.get("comment_count")),
        share_count=_count(statistics.get("share_count")),
        collect_count=_count(statistics.get("collect_count")),
        play_count=_count(statistics.get("play_count")),
        admire_count=_count(statistics.get("admire_count")),
    )


def _hashtags(entries: Sequence[Mapping[str, Any]], aweme_id: int) -> tuple[HashtagRow, ...]:
    # A tag can repeat in one caption; work_hashtags is keyed by (aweme_id, name), so the
    # first occurrence wins.
    rows: list[HashtagRow] = []
    seen: set[str] = set()
    for entry in entries:
        name = _text(entry.get("hashtag_name"))
        name = name.strip() if name else None
        if _int(entry.get("type")) != _HASHTAG or not name or name in seen:
            continue
        seen.add(name)
        rows.append(
            HashtagRow(
                aweme_id=aweme_id,
                position=len(rows),
                name=name,
                hashtag_id=_id(entry.get("hashtag_id")),
                start=_offset(entry.get("start")),
                end=_offset(entry.get("end")),
            )
        )
    return tuple(rows)


def _mention_text(desc: str, start: int | None, end: int | None) -> str | None:
    """`desc[start:end]` without its "@". The offsets are code points in every real sample
    (all BMP text); if that slice is not an "@mention", UTF-16 units (as Android/iOS count)
    are tried before giving up on the check."""
    if start is None or end is None or start >= end:
        return None
    text = desc[start:end]
    if not text.startswith("@"):
        units = desc.encode("utf-16-le", "surrogatepass")
        if 2 * end <= len(units):
            by_units = units[2 * start : 2 * end].decode("utf-16-le", "replace")
            text = by_units if by_units.startswith("@") else text
    return _text(text.removeprefix("@"))


def _mentions(
    entries: Sequence[Mapping[str, Any]], aweme_id: int, desc: str
) -> tuple[MentionRow, ...]:
    rows: list[MentionRow] = []
    for entry in entries:
        uid, sec_uid = _id(entry.get("user_id")), _text(entry.get("sec_uid"))
        if _int(entry.get("type")) != _MENTION or (uid is None and sec_uid is None):
            continue
        start, end = _offset(entry.get("start")), _offset(entry.get("end"))
        rows.append(
            MentionRow(
                aweme_id=aweme_id,
                position=len(rows),
                uid=uid,
                sec_uid=sec_uid,
                nickname=_mention_text(desc, start, end),
                start=start,
                end=end,
            )
        )
    return tuple(rows)


def _images(entries: Sequence[Mapping[str, Any]], aweme_id: int) -> tuple[ImageRow, ...]:
    return tuple(
        ImageRow(
            aweme_id=aweme_id,
            position=position,
            uri=_text(image.get("uri")),
            width=_pixels(image.get("width")),
            height=_pixels(image.get("height")),
            url=_first_url(image.get("url_list")),
        )
        for position, image in enumerate(entries)
    )


def flatten(aweme_detail: Mapping[str, Any], fetched_at: datetime) -> FlatWork:
    """Turn one `aweme_detail` into rows. `fetched_at` (tz-aware) stamps the work, the author
    and the statistics snapshot. Raises `NotAWork` for unusable data, `ValueError` for a
    naive `fetched_at`."""
    if not isinstance(fetched_at, datetime) or fetched_at.utcoffset() is None:
        raise ValueError("fetched_at must be a timezone-aware datetime")
    if not isinstance(aweme_detail, Mapping):
        raise NotAWork(f"aweme_detail is a {type(aweme_detail).__name__}, not an object")
    detail = aweme_detail
    aweme_id = _aweme_id(detail)
    author = _author(_obj(detail.get("author")), fetched_at)
    music = _music(_obj(detail.get("music")))
    status, video = _obj(detail.get("status")), _obj(detail.get("video"))
    raw_desc = detail.get("desc")
    desc = raw_desc if isinstance(raw_desc, str) else ""
    text_extra = _items(detail.get("text_extra"))
    images = _images(_items(detail.get("images")), aweme_id)
    aweme_type, media_type = _small(detail.get("aweme_type")), _small(detail.get("media_type"))
    is_album = bool(images)
    duration = _count(detail.get("duration"))
    private_status = _int(status.get("private_status"))
    work = WorkRow(
        aweme_id=aweme_id,
        author_uid=author.uid if author else None,
        music_id=music.music_id if music else None,
        kind=_kind(is_album, aweme_type, media_type),
        aweme_type=aweme_type,
        media_type=media_type,
        description=_clean(desc),
        created_at=_created_at(detail.get("create_time")),
        duration_ms=duration if duration is not None else _count(video.get("duration")),
        video_width=None if is_album else _pixels(video.get("width")),
        video_height=None if is_album else _pixels(video.get("height")),
        region=_text(detail.get("region")),
        share_url=_canonical_url(detail.get("share_url")),
        is_delete=_bool(status.get("is_delete")),
        is_prohibited=_bool(status.get("is_prohibited")),
        is_private=None if private_status is None else private_status != 0,
        in_reviewing=_bool(status.get("in_reviewing")),
        allow_share=_bool(status.get("allow_share")),
        fetched_at=fetched_at,
    )
    return FlatWork(
        work=work,
        author=author,
        music=music,
        stats=_stats(detail.get("statistics"), aweme_id, fetched_at),
        hashtags=_hashtags(text_extra, aweme_id),
        mentions=_mentions(text_extra, aweme_id, desc),
        images=images,
        raw=aweme_detail,
    )
