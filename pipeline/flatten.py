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
- strings: non-`str` and `""` are None; a missing `desc` is None too (unknown), while `""`
  is a caption that is empty. NUL characters and lone surrogates are replaced one for one
  (`pipeline.douyin.clean_text`), because PostgreSQL TEXT cannot store either.
- a key the payload lacks is None, and None never overwrites a stored value (pipeline.db.merge).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from pipeline.douyin import (
    EARLIEST_CREATE_TIME,
    LATEST_CREATE_TIME,
    clean_label,
    clean_text,
    time_from_aweme_id,
    utf16_to_index,
)
from pipeline.rows import (
    AuthorRow,
    CategoryRow,
    CollectionRow,
    FlatWork,
    HashtagRow,
    ImageRow,
    JsonText,
    MentionRow,
    MusicRow,
    PlaceRow,
    StatsRow,
    WorkRow,
)
from pipeline.upstream.decode import loads_as_json

__all__ = [
    "AuthorRow",
    "CategoryRow",
    "CollectionRow",
    "FlatWork",
    "HashtagRow",
    "ImageRow",
    "MentionRow",
    "MusicRow",
    "NotAWork",
    "PlaceRow",
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
_VIDEO_AWEME_TYPES = (0, 4, 55)  # UPSTREAM.md §3; 4 and 55 appear in older data
_ARTICLE_AWEME_TYPE = 163
_VIDEO_MEDIA_TYPE = 4
_ALBUM_AWEME_TYPE, _ALBUM_MEDIA_TYPE = 68, 2
_POI_ANCHOR_TYPE = 2  # anchor_info.type of a place
_RENDITION_PREFIX = re.compile(r"^[0-9]+x[0-9]+/")
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


def _text(value: object) -> str | None:
    return (clean_text(value) or None) if isinstance(value, str) else None


def _label(value: object) -> str | None:
    """A one-line name: control characters removed, white space stripped; "" is None."""
    return (clean_label(value) or None) if isinstance(value, str) else None


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
    return clean_text(f"{parts.scheme.lower()}://{netloc}{parts.path}")


def _created_at(value: object) -> datetime | None:
    seconds = _ranged(value, EARLIEST_CREATE_TIME, LATEST_CREATE_TIME)
    return None if seconds is None else datetime.fromtimestamp(seconds, tz=UTC)


def _kind(images: object, aweme_type: int | None, media_type: int | None) -> str | None:
    """No single field is reliable (UPSTREAM.md §3): an album is a work with images. None when
    the payload says too little to tell: no type codes, or album codes without the images list
    (a degraded payload of an album must not turn it into "other")."""
    if _items(images):
        return "image_album"
    if not isinstance(images, list | tuple) and (
        aweme_type == _ALBUM_AWEME_TYPE or media_type == _ALBUM_MEDIA_TYPE
    ):
        return None
    if aweme_type == _ARTICLE_AWEME_TYPE:
        return "article"
    if aweme_type in _VIDEO_AWEME_TYPES or media_type == _VIDEO_MEDIA_TYPE:
        return "video"
    if aweme_type is None and media_type is None:
        return None
    return "other"


def _avatar_uri(author: Mapping[str, Any]) -> str | None:
    """The durable `author.avatar_uri`; where a payload lacks it, the uri of a rendition
    (`100x100/aweme-avatar/…`) without its size prefix, which is the same key on every real
    payload that carries both."""
    if uri := _text(author.get("avatar_uri")):
        return uri
    rendition = _uri(
        author.get("avatar_thumb"), author.get("avatar_medium"), author.get("avatar_larger")
    )
    return _RENDITION_PREFIX.sub("", rendition) if rendition else None


def _author(author: Mapping[str, Any], seen_at: datetime) -> AuthorRow | None:
    uid = _id(author.get("uid"))
    if uid is None:
        return None
    return AuthorRow(
        uid=uid,
        sec_uid=_text(author.get("sec_uid")),
        unique_id=_text(author.get("unique_id")),
        short_id=_text(author.get("short_id")),
        nickname=_label(author.get("nickname")),
        signature=_text(author.get("signature")),
        avatar_uri=_avatar_uri(author),
        verification_type=_small(author.get("verification_type")),
        custom_verify=_text(author.get("custom_verify")),
        enterprise_verify_reason=_text(author.get("enterprise_verify_reason")),
        # The detail endpoint reports 0 followers for every account (hidden, not zero): a 0 is
        # "unknown" and never replaces a real count.
        follower_count=_count(author.get("follower_count")) or None,
        following_count=_count(author.get("following_count")),
        total_favorited=_count(author.get("total_favorited")),
        aweme_count=_count(author.get("aweme_count")),
        favoriting_count=_count(author.get("favoriting_count")),
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
        title=_label(music.get("title")),
        author_name=_label(music.get("author")),
        album=_label(music.get("album")),
        duration_s=_ranged(music.get("duration"), 0, INT32_MAX),
        # `is_original` is another flag (false even on original sounds): UPSTREAM.md §3.
        is_original=_bool(music.get("is_original_sound")),
        is_pgc=_bool(music.get("is_pgc")),
        owner_uid=_id(music.get("owner_id")),
        owner_sec_uid=_text(music.get("sec_uid")),
        owner_nickname=_label(music.get("owner_nickname")),
        owner_handle=_label(music.get("owner_handle")),
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


def _offsets(desc: str, entry: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """`text_extra` start/end (UTF-16 code units into `desc`) as code-point offsets into the
    stored description (cleaning keeps its length): what PostgreSQL's `substring` counts."""
    start, end = (_offset(entry.get(key)) for key in ("start", "end"))
    start = None if start is None else utf16_to_index(desc, start)
    end = None if end is None else utf16_to_index(desc, end)
    if start is not None and end is not None and start > end:
        return None, None
    return start, end


def _hashtags(
    entries: Sequence[Mapping[str, Any]], aweme_id: int, desc: str
) -> tuple[HashtagRow, ...]:
    # A tag can repeat in one caption; work_hashtags is keyed by (aweme_id, name), so the
    # first occurrence wins.
    rows: list[HashtagRow] = []
    seen: set[str] = set()
    for entry in entries:
        name = _label(entry.get("hashtag_name"))
        if _int(entry.get("type")) != _HASHTAG or not name or name in seen:
            continue
        seen.add(name)
        start, end = _offsets(desc, entry)
        rows.append(
            HashtagRow(
                aweme_id=aweme_id,
                position=len(rows),
                name=name,
                hashtag_id=_id(entry.get("hashtag_id")),
                start=start,
                end=end,
            )
        )
    return tuple(rows)


def _mentions(
    entries: Sequence[Mapping[str, Any]], aweme_id: int, desc: str
) -> tuple[MentionRow, ...]:
    cleaned = clean_text(desc)
    rows: list[MentionRow] = []
    for entry in entries:
        uid, sec_uid = _id(entry.get("user_id")), _text(entry.get("sec_uid"))
        if _int(entry.get("type")) != _MENTION or (uid is None and sec_uid is None):
            continue
        start, end = _offsets(desc, entry)
        written = cleaned[start:end] if start is not None and end is not None else ""
        rows.append(
            MentionRow(
                aweme_id=aweme_id,
                position=len(rows),
                uid=uid,
                sec_uid=sec_uid,
                nickname=_label(written.removeprefix("@")) if written.startswith("@") else None,
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


def _categories(value: object, aweme_id: int) -> tuple[CategoryRow, ...] | None:
    """`video_tag`: Douyin's category path, broadest first (时尚 > 穿搭 > 女装). Entries with
    id 0 or level 0 are padding."""
    if not isinstance(value, list):
        return None
    rows: dict[int, CategoryRow] = {}
    for entry in _items(value):
        level = _ranged(entry.get("level"), 1, 32)
        category_id = _id(entry.get("tag_id"))
        if level is None or category_id is None or level in rows:
            continue
        rows[level] = CategoryRow(aweme_id, level, category_id, _label(entry.get("tag_name")))
    return tuple(rows[level] for level in sorted(rows))


def _collection(mix: Mapping[str, Any]) -> tuple[CollectionRow | None, int | None]:
    """`mix_info`: the collection (合集) a work belongs to, and its episode number in it."""
    mix_id = _id(mix.get("mix_id"))
    if mix_id is None:
        return None, None
    statis = _obj(mix.get("statis"))
    row = CollectionRow(
        mix_id=mix_id,
        name=_label(mix.get("mix_name")),
        description=_text(mix.get("desc")),
        episodes=_ranged(statis.get("updated_to_episode"), 1, INT32_MAX),
    )
    return row, _ranged(statis.get("current_episode"), 1, INT32_MAX)


def _json_object(value: object) -> Mapping[str, Any]:
    """`anchor_info.extra` is a JSON document inside a string."""
    if not isinstance(value, str) or not value.startswith("{"):
        return _obj(value)
    try:
        return _obj(loads_as_json(value))
    except (ValueError, RecursionError):  # a string is no trusted document either
        return {}


def _coordinate(value: object, limit: float) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if -limit <= number <= limit and number != 0.0 else None


def _place(detail: Mapping[str, Any]) -> PlaceRow | None:
    """The place a work is tagged with: `poi_info` where present, else a place anchor
    (`anchor_info` of type 2, whose details sit in its JSON `extra`)."""
    poi = _obj(detail.get("poi_info"))
    if _id(poi.get("poi_id")) is None:
        anchor = _obj(detail.get("anchor_info"))
        if _int(anchor.get("type")) != _POI_ANCHOR_TYPE:
            return None
        poi = _json_object(anchor.get("extra"))
    poi_id = _id(poi.get("poi_id"))
    if poi_id is None:
        return None
    address = _obj(poi.get("address_info"))
    return PlaceRow(
        poi_id=poi_id,
        name=_label(poi.get("poi_name")),
        city=_label(address.get("city")),
        province=_label(address.get("province")),
        country=_label(address.get("country")),
        latitude=_coordinate(poi.get("poi_latitude"), 90.0),
        longitude=_coordinate(poi.get("poi_longitude"), 180.0),
    )


def _children_source(value: object) -> list[Mapping[str, Any]] | None:
    """A list the payload carries (possibly empty), or None when it does not say."""
    return _items(value) if isinstance(value, list | tuple) else None


def flatten(
    aweme_detail: Mapping[str, Any], fetched_at: datetime, raw: JsonText | None = None
) -> FlatWork:
    """Turn one `aweme_detail` into rows. `fetched_at` (tz-aware) stamps the work, the author
    and the statistics snapshot. `raw` is the payload's text as received, stored in its stead
    (so the decoded object need not outlive this call). Raises `NotAWork` for unusable data,
    `ValueError` for a naive `fetched_at`."""
    if not isinstance(fetched_at, datetime) or fetched_at.utcoffset() is None:
        raise ValueError("fetched_at must be a timezone-aware datetime")
    if not isinstance(aweme_detail, Mapping):
        raise NotAWork(f"aweme_detail is a {type(aweme_detail).__name__}, not an object")
    detail = aweme_detail
    aweme_id = _aweme_id(detail)
    author = _author(_obj(detail.get("author")), fetched_at)
    music = _music(_obj(detail.get("music")))
    collection, episode = _collection(_obj(detail.get("mix_info")))
    place = _place(detail)
    status, video = _obj(detail.get("status")), _obj(detail.get("video"))
    raw_desc = detail.get("desc")
    desc = raw_desc if isinstance(raw_desc, str) else None
    text_extra = _children_source(detail.get("text_extra"))
    raw_images = detail.get("images")
    images = _images(_items(raw_images), aweme_id)
    aweme_type, media_type = _small(detail.get("aweme_type")), _small(detail.get("media_type"))
    kind = _kind(raw_images, aweme_type, media_type)
    duration = _count(detail.get("duration"))
    private_status = _int(status.get("private_status"))
    statistics = _stats(detail.get("statistics"), aweme_id, fetched_at)
    work = WorkRow(
        aweme_id=aweme_id,
        author_uid=author.uid if author else None,
        music_id=music.music_id if music else None,
        kind=kind,
        aweme_type=aweme_type,
        media_type=media_type,
        description=None if desc is None else clean_text(desc),
        created_at=_created_at(detail.get("create_time")),
        created_at_from_id=time_from_aweme_id(aweme_id),
        duration_ms=duration if duration is not None else _count(video.get("duration")),
        video_width=None if kind == "image_album" else _pixels(video.get("width")),
        video_height=None if kind == "image_album" else _pixels(video.get("height")),
        video_ratio=None if kind == "image_album" else _label(video.get("ratio")),
        cover_uri=_uri(video.get("cover"), video.get("origin_cover")),
        region=_text(detail.get("region")),
        share_url=_canonical_url(detail.get("share_url")),
        group_id=_id(detail.get("group_id")),
        is_ads=_bool(detail.get("is_ads")),
        is_top=_bool(detail.get("is_top")),
        ip_label=_label(detail.get("ip_label")),
        collection_id=collection.mix_id if collection else None,
        collection_episode=episode if collection else None,
        poi_id=place.poi_id if place else None,
        is_delete=_bool(status.get("is_delete")),
        is_prohibited=_bool(status.get("is_prohibited")),
        is_private=None if private_status is None else private_status != 0,
        in_reviewing=_bool(status.get("in_reviewing")),
        allow_share=_bool(status.get("allow_share")),
        fetched_at=fetched_at,
    )
    # An album's images are known from its list; a list that is absent or null says nothing
    # (a video's `images` is null: it has none, which the stored empty set already says).
    image_rows = images if images or isinstance(raw_images, list) else None
    return FlatWork(
        work=work,
        author=author,
        music=music,
        collection=collection,
        place=place,
        stats=statistics,
        hashtags=None if text_extra is None else _hashtags(text_extra, aweme_id, desc or ""),
        mentions=None if text_extra is None else _mentions(text_extra, aweme_id, desc or ""),
        images=image_rows,
        categories=_categories(detail.get("video_tag"), aweme_id),
        complete=author is not None and statistics is not None and desc is not None,
        raw=aweme_detail if raw is None else raw,
    )
