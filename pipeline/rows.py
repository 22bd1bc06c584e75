"""The typed rows that pass from the flattener to the loader: one frozen value object per
table row (STYLE.md habit 15). `pipeline.flatten` makes them; `pipeline.db.load` writes them.

`None` in a content field always means "this payload does not say": the key was absent, null,
of the wrong type, or a value the endpoint is known to hide. The loader never writes a `None`
over a known value (docs/schema.md, "Facts over time").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class AuthorRow:
    uid: int
    sec_uid: str | None
    unique_id: str | None
    short_id: str | None
    nickname: str | None
    signature: str | None
    avatar_uri: str | None
    verification_type: int | None
    custom_verify: str | None
    enterprise_verify_reason: str | None
    follower_count: int | None  # None when hidden: the detail endpoint reports 0 for everyone
    following_count: int | None
    total_favorited: int | None
    aweme_count: int | None
    favoriting_count: int | None
    seen_at: datetime


@dataclass(frozen=True, slots=True)
class MusicRow:
    music_id: int
    title: str | None
    author_name: str | None
    album: str | None
    duration_s: int | None
    is_original: bool | None  # music.is_original_sound
    is_pgc: bool | None
    owner_uid: int | None
    owner_sec_uid: str | None
    owner_nickname: str | None
    owner_handle: str | None
    cover_uri: str | None


@dataclass(frozen=True, slots=True)
class CollectionRow:
    mix_id: int
    name: str | None
    description: str | None
    episodes: int | None  # statis.updated_to_episode: episodes published so far


@dataclass(frozen=True, slots=True)
class PlaceRow:
    poi_id: int
    name: str | None
    city: str | None
    province: str | None
    country: str | None
    latitude: float | None
    longitude: float | None


@dataclass(frozen=True, slots=True)
class WorkRow:
    aweme_id: int
    author_uid: int | None  # == author.uid; None exactly when FlatWork.author is None
    music_id: int | None  # == music.music_id; None exactly when FlatWork.music is None
    kind: str | None  # "video" | "image_album" | "article" | "other"; None: cannot tell
    aweme_type: int | None
    media_type: int | None
    description: str | None
    created_at: datetime | None  # create_time; None when the payload has none
    created_at_from_id: datetime | None  # the estimate the aweme_id carries (top 32 bits)
    duration_ms: int | None  # 0 for image albums, as Douyin reports it
    video_width: int | None  # None for image albums: their `video` is the background music
    video_height: int | None
    video_ratio: str | None
    cover_uri: str | None
    region: str | None
    share_url: str | None  # scheme + host + path; the query carries device ids
    group_id: int | None
    is_ads: bool | None
    is_top: bool | None
    ip_label: str | None
    collection_id: int | None  # == collection.mix_id
    collection_episode: int | None
    poi_id: int | None  # == place.poi_id
    is_delete: bool | None
    is_prohibited: bool | None
    is_private: bool | None
    in_reviewing: bool | None
    allow_share: bool | None
    fetched_at: datetime


@dataclass(frozen=True, slots=True)
class StatsRow:
    aweme_id: int
    captured_at: datetime
    digg_count: int | None
    comment_count: int | None
    share_count: int | None
    collect_count: int | None
    play_count: int | None  # always 0 on the web API: 0 does not mean "never played"
    admire_count: int | None


@dataclass(frozen=True, slots=True)
class HashtagRow:
    aweme_id: int
    position: int
    name: str
    hashtag_id: int | None
    start: int | None  # code points into the cleaned description (what `substring` counts)
    end: int | None


@dataclass(frozen=True, slots=True)
class MentionRow:
    aweme_id: int
    position: int
    uid: int | None
    sec_uid: str | None
    nickname: str | None
    start: int | None
    end: int | None


@dataclass(frozen=True, slots=True)
class ImageRow:
    aweme_id: int
    position: int
    uri: str | None
    width: int | None
    height: int | None
    url: str | None  # signed and expiring: "last seen" only; `uri` is the durable reference


@dataclass(frozen=True, slots=True)
class CategoryRow:
    aweme_id: int
    level: int  # 1 = broadest (时尚), 2, 3 = narrowest (女装)
    category_id: int
    name: str | None


class Utf8Text(bytes):
    """JSON text as UTF-8 bytes, bound to a text parameter as it is (the dumper is registered
    by `pipeline.db.params`): a ~30 KB body is neither decoded to `str` nor encoded back to be
    sent (~30 µs per payload)."""


@dataclass(frozen=True, slots=True)
class JsonText:
    """A payload as JSON text PostgreSQL can store as it is (cleaned of NUL and lone
    surrogates: `pipeline.douyin.received_text`), and the path of the work's object in it:
    `("data", "aweme_detail")` for a body as received, `()` for the object itself. PostgreSQL
    parses it and takes the path; Python never encodes it again."""

    data: str | Utf8Text
    path: tuple[str, ...] = ()

    @property
    def text(self) -> str:
        return self.data if isinstance(self.data, str) else self.data.decode()


@dataclass(frozen=True, slots=True)
class FlatWork:
    """Everything one payload says about one work. A children tuple is `None` when the payload
    does not carry that list at all (the stored children are then kept); `()` means "none"."""

    work: WorkRow
    author: AuthorRow | None
    music: MusicRow | None
    collection: CollectionRow | None
    place: PlaceRow | None
    stats: StatsRow | None
    hashtags: tuple[HashtagRow, ...] | None
    mentions: tuple[MentionRow, ...] | None
    images: tuple[ImageRow, ...] | None
    categories: tuple[CategoryRow, ...] | None
    complete: bool  # author, statistics and description all present: a full payload
    # For raw_payloads: the body's text as received when it can be stored as it is (the decoded
    # object is then let go after flattening), else the decoded object, encoded by the loader.
    raw: Mapping[str, Any] | JsonText
