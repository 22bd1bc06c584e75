"""The tables analysts query. Every table and column carries a COMMENT (visible in `psql \\d+`).

Names are a public contract: docs/schema.md and docs/queries.sql rely on them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        datetime: DateTime(timezone=True),
        int: BigInteger,
        str: Text,
    }


class Author(Base):
    __tablename__ = "authors"
    __table_args__ = {"comment": "One row per Douyin account (author.uid) seen as a work's author."}

    uid: Mapped[int] = mapped_column(
        primary_key=True, autoincrement=False, comment="Douyin numeric user id (author.uid)."
    )
    sec_uid: Mapped[str | None] = mapped_column(
        unique=True, comment="Opaque secure user id (MS4wLjABAAAA…), used in profile URLs."
    )
    unique_id: Mapped[str | None] = mapped_column(
        comment="Custom Douyin handle (抖音号); NULL when the account has none."
    )
    short_id: Mapped[str | None] = mapped_column(comment="Legacy numeric Douyin handle.")
    nickname: Mapped[str | None] = mapped_column(comment="Display name as last seen.")
    signature: Mapped[str | None] = mapped_column(comment="Profile bio as last seen.")
    avatar_uri: Mapped[str | None] = mapped_column(
        comment="Durable storage uri of the avatar (URLs expire; uri does not)."
    )
    verification_type: Mapped[int | None] = mapped_column(
        Integer, comment="Douyin verification_type code as last seen."
    )
    custom_verify: Mapped[str | None] = mapped_column(
        comment="Personal verification label (e.g. occupation)."
    )
    enterprise_verify_reason: Mapped[str | None] = mapped_column(
        comment="Enterprise (blue V) verification label."
    )
    follower_count: Mapped[int | None] = mapped_column(
        comment="Followers as last seen (often 0 in work payloads: Douyin hides it there)."
    )
    following_count: Mapped[int | None] = mapped_column(comment="Accounts followed, as last seen.")
    total_favorited: Mapped[int | None] = mapped_column(
        comment="Total likes received across all works, as last seen."
    )
    first_seen_at: Mapped[datetime] = mapped_column(
        server_default=text("now()"), comment="When this author was first loaded."
    )
    last_seen_at: Mapped[datetime] = mapped_column(
        server_default=text("now()"), comment="Fetch time of the newest payload it was seen in."
    )


class Music(Base):
    __tablename__ = "music"
    __table_args__ = {"comment": "One row per sound track (music.id_str) used by a work."}

    music_id: Mapped[int] = mapped_column(
        primary_key=True,
        autoincrement=False,
        comment="Douyin music id, from the string field music.id_str (never the rounded number).",
    )
    title: Mapped[str | None] = mapped_column(comment="Track title.")
    author_name: Mapped[str | None] = mapped_column(comment="Track author as shown by Douyin.")
    album: Mapped[str | None] = mapped_column(comment="Album name; often empty upstream.")
    duration_s: Mapped[int | None] = mapped_column(Integer, comment="Track length in seconds.")
    is_original: Mapped[bool | None] = mapped_column(
        comment="True when the sound is an original recording by its owner."
    )
    owner_uid: Mapped[int | None] = mapped_column(comment="uid of the account that owns the sound.")
    owner_sec_uid: Mapped[str | None] = mapped_column(comment="sec_uid of the owner.")
    owner_nickname: Mapped[str | None] = mapped_column(comment="Owner display name as last seen.")
    cover_uri: Mapped[str | None] = mapped_column(comment="Durable storage uri of the cover.")
    first_seen_at: Mapped[datetime] = mapped_column(
        server_default=text("now()"), comment="When this track was first loaded."
    )
    last_seen_at: Mapped[datetime] = mapped_column(
        server_default=text("now()"), comment="Fetch time of the newest payload it was seen in."
    )


class Work(Base):
    __tablename__ = "works"
    __table_args__ = (
        CheckConstraint("kind IN ('video', 'image_album', 'article', 'other')", name="kind_known"),
        {"comment": "One row per Douyin work (video, image album or article), keyed by aweme_id."},
    )

    aweme_id: Mapped[int] = mapped_column(
        primary_key=True, autoincrement=False, comment="Douyin work id (aweme_id)."
    )
    author_uid: Mapped[int | None] = mapped_column(
        ForeignKey("authors.uid"), index=True, comment="authors.uid of the creator."
    )
    music_id: Mapped[int | None] = mapped_column(
        ForeignKey("music.music_id"), index=True, comment="music.music_id; NULL when no sound."
    )
    kind: Mapped[str] = mapped_column(
        comment="video | image_album (images present) | article (aweme_type 163) | other."
    )
    aweme_type: Mapped[int | None] = mapped_column(
        Integer, comment="Raw Douyin aweme_type (0 video, 68 image album, 163 article)."
    )
    media_type: Mapped[int | None] = mapped_column(
        Integer, comment="Raw Douyin media_type (4 video, 2 image album)."
    )
    description: Mapped[str] = mapped_column(
        server_default="", comment="Caption text (desc), hashtags and mentions included."
    )
    created_at: Mapped[datetime | None] = mapped_column(
        index=True, comment="When the work was published (create_time)."
    )
    duration_ms: Mapped[int | None] = mapped_column(
        comment="Video length in milliseconds; 0 for image albums."
    )
    video_width: Mapped[int | None] = mapped_column(
        Integer, comment="Video width in pixels; NULL for image albums."
    )
    video_height: Mapped[int | None] = mapped_column(
        Integer, comment="Video height in pixels; NULL for image albums."
    )
    region: Mapped[str | None] = mapped_column(comment="Region code reported by Douyin (e.g. CN).")
    share_url: Mapped[str | None] = mapped_column(
        comment="Canonical share URL with tracking query parameters removed."
    )
    is_delete: Mapped[bool | None] = mapped_column(comment="status.is_delete as last fetched.")
    is_prohibited: Mapped[bool | None] = mapped_column(
        comment="status.is_prohibited as last fetched."
    )
    is_private: Mapped[bool | None] = mapped_column(comment="status.private_status != 0.")
    in_reviewing: Mapped[bool | None] = mapped_column(comment="status.in_reviewing.")
    allow_share: Mapped[bool | None] = mapped_column(comment="status.allow_share.")
    first_seen_at: Mapped[datetime] = mapped_column(
        server_default=text("now()"), comment="When the work was first loaded."
    )
    last_fetched_at: Mapped[datetime] = mapped_column(
        server_default=text("now()"),
        comment="Fetch time of the newest payload loaded: the last time its counts were checked.",
    )
    next_check_at: Mapped[datetime] = mapped_column(
        server_default=text("now()"),
        comment=(
            "When `ingest refresh` should check the counts again (grows with the work's age; "
            "see docs/scheduling.md)."
        ),
    )
    gone_at: Mapped[datetime | None] = mapped_column(
        comment=(
            "When a refresh (or a forced re-fetch) found the work deleted, private or under "
            "review; NULL while available."
        )
    )
    gone_reason: Mapped[str | None] = mapped_column(
        comment="Why the work is gone, e.g. status_self_see (NULL while available)."
    )


_COUNT_COMMENT = "{} at captured_at (BIGINT)."


class WorkStat(Base):
    __tablename__ = "work_stats"
    __table_args__ = {
        "comment": (
            "Append-only statistics snapshots, one row per work per change: a fetch whose counts "
            "equal the latest snapshot adds no row (works.last_fetched_at records the check)."
        )
    }

    aweme_id: Mapped[int] = mapped_column(
        ForeignKey("works.aweme_id", ondelete="CASCADE"),
        primary_key=True,
        comment="works.aweme_id.",
    )
    captured_at: Mapped[datetime] = mapped_column(
        primary_key=True, comment="Fetch time of the payload these counts come from."
    )
    digg_count: Mapped[int | None] = mapped_column(comment=_COUNT_COMMENT.format("Likes"))
    comment_count: Mapped[int | None] = mapped_column(comment=_COUNT_COMMENT.format("Comments"))
    share_count: Mapped[int | None] = mapped_column(comment=_COUNT_COMMENT.format("Shares"))
    collect_count: Mapped[int | None] = mapped_column(
        comment=_COUNT_COMMENT.format("Favourites (collects)")
    )
    play_count: Mapped[int | None] = mapped_column(
        comment="Plays; always 0 on the web API, so 0 does not mean unplayed."
    )
    admire_count: Mapped[int | None] = mapped_column(
        comment=_COUNT_COMMENT.format("Admires (赞赏)")
    )


class Hashtag(Base):
    __tablename__ = "hashtags"
    __table_args__ = {"comment": "One row per hashtag name seen in any work's text_extra."}

    name: Mapped[str] = mapped_column(
        primary_key=True, comment="Hashtag text without the leading #."
    )
    hashtag_id: Mapped[int | None] = mapped_column(
        comment="Douyin's challenge id for the tag, when the payload carried one."
    )
    first_seen_at: Mapped[datetime] = mapped_column(
        server_default=text("now()"), comment="When the tag was first loaded."
    )


class WorkHashtag(Base):
    __tablename__ = "work_hashtags"
    __table_args__ = {"comment": "One row per hashtag used in a work's description."}

    aweme_id: Mapped[int] = mapped_column(
        ForeignKey("works.aweme_id", ondelete="CASCADE"),
        primary_key=True,
        comment="works.aweme_id.",
    )
    hashtag_name: Mapped[str] = mapped_column(
        ForeignKey("hashtags.name"), primary_key=True, index=True, comment="hashtags.name."
    )
    position: Mapped[int] = mapped_column(
        Integer, comment="0-based order of the tag among the work's hashtags."
    )
    start_offset: Mapped[int | None] = mapped_column(
        Integer, comment="Start character offset of the tag in works.description."
    )
    end_offset: Mapped[int | None] = mapped_column(
        Integer, comment="End character offset (exclusive) in works.description."
    )


class WorkMention(Base):
    __tablename__ = "work_mentions"
    __table_args__ = {"comment": "One row per @mention in a work's description."}

    aweme_id: Mapped[int] = mapped_column(
        ForeignKey("works.aweme_id", ondelete="CASCADE"),
        primary_key=True,
        comment="works.aweme_id.",
    )
    position: Mapped[int] = mapped_column(
        Integer, primary_key=True, comment="0-based order of the mention in the description."
    )
    uid: Mapped[int | None] = mapped_column(index=True, comment="Mentioned account's uid.")
    sec_uid: Mapped[str | None] = mapped_column(comment="Mentioned account's sec_uid.")
    nickname: Mapped[str | None] = mapped_column(
        comment="Mention text as written in the description, without the @."
    )
    start_offset: Mapped[int | None] = mapped_column(
        Integer, comment="Start character offset in works.description."
    )
    end_offset: Mapped[int | None] = mapped_column(
        Integer, comment="End character offset (exclusive) in works.description."
    )


class WorkImage(Base):
    __tablename__ = "work_images"
    __table_args__ = {"comment": "One row per image of an image album, in display order."}

    aweme_id: Mapped[int] = mapped_column(
        ForeignKey("works.aweme_id", ondelete="CASCADE"),
        primary_key=True,
        comment="works.aweme_id.",
    )
    position: Mapped[int] = mapped_column(
        Integer, primary_key=True, comment="0-based position of the image in the album."
    )
    uri: Mapped[str | None] = mapped_column(comment="Durable storage uri of the image.")
    width: Mapped[int | None] = mapped_column(Integer, comment="Width in pixels.")
    height: Mapped[int | None] = mapped_column(Integer, comment="Height in pixels.")
    url: Mapped[str | None] = mapped_column(
        comment="First signed URL as last seen; it expires, use uri for durable references."
    )


class RawPayload(Base):
    __tablename__ = "raw_payloads"
    __table_args__ = {
        "comment": (
            "The newest raw aweme_detail per work, so every table can be rebuilt "
            "(`ingest reprocess`) without refetching."
        )
    }

    aweme_id: Mapped[int] = mapped_column(
        ForeignKey("works.aweme_id", ondelete="CASCADE"),
        primary_key=True,
        comment="works.aweme_id.",
    )
    fetched_at: Mapped[datetime] = mapped_column(comment="When this payload was fetched.")
    payload: Mapped[dict[str, Any]] = mapped_column(
        JSONB, comment="aweme_detail exactly as received (NUL characters removed)."
    )


Index("ix_work_stats_captured_at", WorkStat.captured_at)
# Refresh picks due works in next_check_at order; gone works are never due.
Index(
    "ix_works_next_check_at_available",
    Work.next_check_at,
    postgresql_where=Work.gone_at.is_(None),
)
Index(
    "ix_works_last_fetched_at_available",
    Work.last_fetched_at,
    postgresql_where=Work.gone_at.is_(None),
)
