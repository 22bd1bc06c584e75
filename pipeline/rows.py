"""The typed rows that pass from the flattener to the loader: one frozen value object per
table row (STYLE.md habit 15). `pipeline.flatten` makes them; `pipeline.db.load` writes them."""

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
    follower_count: int | None  # as seen in this payload (often 0: hidden in work payloads)
    following_count: int | None
    total_favorited: int | None
    seen_at: datetime


@dataclass(frozen=True, slots=True)
class MusicRow:
    music_id: int
    title: str | None
    author_name: str | None
    album: str | None
    duration_s: int | None
    is_original: bool | None
    owner_uid: int | None
    owner_sec_uid: str | None
    owner_nickname: str | None
    cover_uri: str | None


@dataclass(frozen=True, slots=True)
class WorkRow:
    aweme_id: int
    author_uid: int | None  # == author.uid; None exactly when FlatWork.author is None
    music_id: int | None  # == music.music_id; None exactly when FlatWork.music is None
    kind: str  # "video" | "image_album" | "article" | "other"
    aweme_type: int | None
    media_type: int | None
    description: str
    created_at: datetime | None
    duration_ms: int | None  # 0 for image albums, as Douyin reports it
    video_width: int | None  # None for image albums: their `video` is the background music
    video_height: int | None
    region: str | None
    share_url: str | None  # scheme + host + path; the query carries device ids
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
    start: int | None
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
class FlatWork:
    work: WorkRow
    author: AuthorRow | None
    music: MusicRow | None
    stats: StatsRow | None
    hashtags: tuple[HashtagRow, ...]
    mentions: tuple[MentionRow, ...]
    images: tuple[ImageRow, ...]
    raw: Mapping[str, Any]  # the input itself, for raw_payloads
