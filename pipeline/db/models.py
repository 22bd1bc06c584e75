"""The tables analysts query. Every table and column carries a COMMENT (visible in `psql \\d+`).

Names are a public contract: docs/schema.md and docs/queries.sql rely on them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from pipeline.douyin import GONE_REASON_PATTERN

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


class MergedRow:
    """The columns of a table the loader merges field by field (`pipeline.db.merge`)."""

    first_seen_at: Mapped[datetime] = mapped_column(
        server_default=text("now()"), comment="Fetch time of the oldest payload it was seen in."
    )
    last_seen_at: Mapped[datetime] = mapped_column(
        server_default=text("now()"), comment="Fetch time of the newest payload it was seen in."
    )
    field_seen_at: Mapped[dict[str, Any] | None] = mapped_column(
        JSONB,
        comment=(
            "Loader bookkeeping for the newest-value-wins merge: fetch time of the payload each "
            "value came from, for values older than last_seen_at (NULL: all are that new)."
        ),
    )


class Author(MergedRow, Base):
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
        comment=(
            "Durable storage uri of the avatar (author.avatar_uri; where absent, a rendition's "
            "uri without its 100x100/ size prefix). URLs expire; the uri does not."
        )
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
        comment=(
            "Followers, newest known; NULL when never seen (the single-work endpoint hides it "
            "and reports 0, which is never stored)."
        )
    )
    following_count: Mapped[int | None] = mapped_column(comment="Accounts followed, newest known.")
    total_favorited: Mapped[int | None] = mapped_column(
        comment="Total likes received across all works, newest known."
    )
    aweme_count: Mapped[int | None] = mapped_column(
        comment="Works the account has published, newest known (post-list payloads carry it)."
    )
    favoriting_count: Mapped[int | None] = mapped_column(
        comment="Works the account has liked, newest known."
    )


class Music(MergedRow, Base):
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
        comment="Original sound (music.is_original_sound): recorded by its owner, not a track."
    )
    is_pgc: Mapped[bool | None] = mapped_column(
        comment="Professionally produced (licensed) music (music.is_pgc)."
    )
    owner_uid: Mapped[int | None] = mapped_column(comment="uid of the account that owns the sound.")
    owner_sec_uid: Mapped[str | None] = mapped_column(comment="sec_uid of the owner.")
    owner_nickname: Mapped[str | None] = mapped_column(comment="Owner display name as last seen.")
    owner_handle: Mapped[str | None] = mapped_column(
        comment="Owner's Douyin handle (music.owner_handle) as last seen."
    )
    cover_uri: Mapped[str | None] = mapped_column(comment="Durable storage uri of the cover.")


class Work(Base):
    """Content columns are written only by the loader (`pipeline.db.load`), from payloads;
    state columns (STATE_COLUMNS) only by the run that fetched the work and by the refresh
    scheduler (`pipeline.db.state`). `ingest reprocess` rebuilds content and never touches state.
    """

    __tablename__ = "works"
    __table_args__ = (
        CheckConstraint("kind IN ('video', 'image_album', 'article', 'other')", name="kind_known"),
        CheckConstraint(f"gone_reason ~ '{GONE_REASON_PATTERN}'", name="gone_reason_known"),
        {
            "comment": (
                "One row per Douyin work (video, image album or article), keyed by aweme_id. "
                "Content columns come from payloads (newest known value of each); state columns "
                "(last_fetched_at, next_check_at, gone_at, gone_reason) from the runs that "
                "checked the work."
            )
        },
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
    kind: Mapped[str | None] = mapped_column(
        comment=(
            "video | image_album (images present, or album type codes) | article (aweme_type "
            "163) | other; NULL while no payload said enough to tell."
        )
    )
    aweme_type: Mapped[int | None] = mapped_column(
        Integer, comment="Raw Douyin aweme_type (0 video, 68 image album, 163 article)."
    )
    media_type: Mapped[int | None] = mapped_column(
        Integer, comment="Raw Douyin media_type (4 video, 2 image album)."
    )
    description: Mapped[str | None] = mapped_column(
        comment=(
            "Caption text (desc), hashtags and mentions included; '' for no caption, NULL while "
            "no payload carried one."
        )
    )
    created_at: Mapped[datetime | None] = mapped_column(
        index=True,
        comment=(
            "When the work was published: create_time, or where no payload carried one, the "
            "estimate in the aweme_id's top 32 bits (see created_at_estimated)."
        ),
    )
    created_at_estimated: Mapped[bool | None] = mapped_column(
        comment=(
            "True when created_at is the estimate from the aweme_id (1-630 s before the real "
            "create_time on every payload checked), false when it is create_time."
        )
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
    video_ratio: Mapped[str | None] = mapped_column(
        comment="video.ratio, Douyin's resolution label (540p, 720p, 1080p, default)."
    )
    cover_uri: Mapped[str | None] = mapped_column(
        comment="Durable storage uri of the cover image (video.cover)."
    )
    region: Mapped[str | None] = mapped_column(comment="Region code reported by Douyin (e.g. CN).")
    share_url: Mapped[str | None] = mapped_column(
        comment="Canonical share URL with tracking query parameters removed."
    )
    group_id: Mapped[int | None] = mapped_column(
        comment="Douyin group_id: usually the aweme_id; a re-post can name its original."
    )
    is_ads: Mapped[bool | None] = mapped_column(
        comment="Marked as an advertisement (is_ads; detail payloads only)."
    )
    is_top: Mapped[bool | None] = mapped_column(
        comment="Pinned to the top of the author's profile (is_top)."
    )
    ip_label: Mapped[str | None] = mapped_column(
        comment="IP-location label shown under the work (ip_label), where Douyin sends one."
    )
    collection_id: Mapped[int | None] = mapped_column(
        ForeignKey("collections.mix_id"),
        index=True,
        comment="collections.mix_id of the collection (合集) the work belongs to.",
    )
    collection_episode: Mapped[int | None] = mapped_column(
        Integer, comment="Episode number of the work in its collection (1-based)."
    )
    poi_id: Mapped[int | None] = mapped_column(
        ForeignKey("places.poi_id"), index=True, comment="places.poi_id the work is tagged with."
    )
    is_delete: Mapped[bool | None] = mapped_column(comment="status.is_delete as last fetched.")
    is_prohibited: Mapped[bool | None] = mapped_column(
        comment="status.is_prohibited as last fetched."
    )
    is_private: Mapped[bool | None] = mapped_column(comment="status.private_status != 0.")
    in_reviewing: Mapped[bool | None] = mapped_column(comment="status.in_reviewing.")
    allow_share: Mapped[bool | None] = mapped_column(comment="status.allow_share.")
    first_seen_at: Mapped[datetime] = mapped_column(
        server_default=text("now()"), comment="Fetch time of the oldest payload loaded."
    )
    last_seen_at: Mapped[datetime] = mapped_column(
        server_default=text("now()"),
        comment="Fetch time of the newest payload loaded (content; see last_fetched_at for state).",
    )
    field_seen_at: Mapped[dict[str, Any] | None] = mapped_column(
        JSONB,
        comment=(
            "Loader bookkeeping for the newest-value-wins merge: fetch time of the payload each "
            "value came from, for values older than last_seen_at (NULL: all are that new)."
        ),
    )
    last_fetched_at: Mapped[datetime] = mapped_column(
        server_default=text("now()"),
        comment=("State: when a run last fetched the work successfully (its counts were checked)."),
    )
    next_check_at: Mapped[datetime] = mapped_column(
        server_default=text("now()"),
        comment=(
            "State: when `ingest refresh` should check the counts again (grows with the work's "
            "age; see docs/scheduling.md)."
        ),
    )
    gone_at: Mapped[datetime | None] = mapped_column(
        comment=(
            "State: when a run found the work deleted, private or under review; NULL while "
            "available."
        )
    )
    gone_reason: Mapped[str | None] = mapped_column(
        comment=(
            "State: why the work is gone: Douyin's filter_reason token (status_self_see = "
            "private, status_deleted, status_audit_self_see = under review, item_not_exist, "
            "others as sent) or unknown."
        )
    )


# Written only by pipeline.db.state: the loader's writers never name these.
STATE_COLUMNS = frozenset({"last_fetched_at", "next_check_at", "gone_at", "gone_reason"})


class Collection(MergedRow, Base):
    __tablename__ = "collections"
    __table_args__ = {
        "comment": "One row per collection (合集, mix_info) a loaded work belongs to."
    }

    mix_id: Mapped[int] = mapped_column(
        primary_key=True, autoincrement=False, comment="Douyin collection id (mix_info.mix_id)."
    )
    name: Mapped[str | None] = mapped_column(comment="Collection title, newest known.")
    description: Mapped[str | None] = mapped_column(comment="Collection description, if any.")
    episodes: Mapped[int | None] = mapped_column(
        Integer, comment="Episodes published so far (statis.updated_to_episode), newest known."
    )


class Place(MergedRow, Base):
    __tablename__ = "places"
    __table_args__ = {"comment": "One row per place (POI) a loaded work is tagged with."}

    poi_id: Mapped[int] = mapped_column(
        primary_key=True, autoincrement=False, comment="Douyin POI id (poi_info / place anchor)."
    )
    name: Mapped[str | None] = mapped_column(comment="Place name, newest known.")
    city: Mapped[str | None] = mapped_column(comment="City of the place (address_info.city).")
    province: Mapped[str | None] = mapped_column(comment="Province (address_info.province).")
    country: Mapped[str | None] = mapped_column(comment="Country (address_info.country).")
    latitude: Mapped[float | None] = mapped_column(Double, comment="Latitude in degrees.")
    longitude: Mapped[float | None] = mapped_column(Double, comment="Longitude in degrees.")


class Category(Base):
    __tablename__ = "categories"
    __table_args__ = {"comment": "One row per Douyin content category (video_tag entry)."}

    category_id: Mapped[int] = mapped_column(
        primary_key=True, autoincrement=False, comment="Douyin category id (video_tag.tag_id)."
    )
    name: Mapped[str | None] = mapped_column(comment="Category name (e.g. 时尚, 穿搭, 女装).")
    level: Mapped[int] = mapped_column(
        Integer, comment="Depth in Douyin's category tree: 1 broadest, 3 narrowest."
    )


class WorkCategory(Base):
    __tablename__ = "work_categories"
    __table_args__ = {
        "comment": "One row per level of a work's category path (video_tag), broadest first."
    }

    aweme_id: Mapped[int] = mapped_column(
        ForeignKey("works.aweme_id", ondelete="CASCADE"),
        primary_key=True,
        comment="works.aweme_id.",
    )
    level: Mapped[int] = mapped_column(
        Integer, primary_key=True, comment="1 = broadest category, 2, 3 = narrowest."
    )
    category_id: Mapped[int] = mapped_column(
        ForeignKey("categories.category_id"), index=True, comment="categories.category_id."
    )


class AuthorSnapshot(Base):
    __tablename__ = "author_snapshots"
    __table_args__ = {
        "comment": (
            "Append-only snapshots of an account's counts, one row per change (like "
            "work_stats): a payload whose known counts equal the latest snapshot adds no row."
        )
    }

    uid: Mapped[int] = mapped_column(
        ForeignKey("authors.uid", ondelete="CASCADE"), primary_key=True, comment="authors.uid."
    )
    captured_at: Mapped[datetime] = mapped_column(
        primary_key=True, comment="Fetch time of the payload these counts come from."
    )
    follower_count: Mapped[int | None] = mapped_column(
        comment="Followers; NULL when the payload hid them (single-work endpoint)."
    )
    following_count: Mapped[int | None] = mapped_column(comment="Accounts followed.")
    total_favorited: Mapped[int | None] = mapped_column(
        comment="Total likes received across all works."
    )
    aweme_count: Mapped[int | None] = mapped_column(
        comment="Works published (NULL when the payload did not say)."
    )
    favoriting_count: Mapped[int | None] = mapped_column(comment="Works liked.")


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
        Integer,
        comment=(
            "0-based start of the tag in works.description, in characters (code points, as "
            "substring() counts; Douyin's UTF-16 offsets are converted): "
            "substring(description from start_offset + 1 for end_offset - start_offset)."
        ),
    )
    end_offset: Mapped[int | None] = mapped_column(
        Integer, comment="End (exclusive) in works.description, in characters (code points)."
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
        Integer,
        comment="0-based start in works.description, in characters (code points).",
    )
    end_offset: Mapped[int | None] = mapped_column(
        Integer, comment="End (exclusive) in works.description, in characters (code points)."
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
            "The newest raw aweme_detail per work, and the newest complete one when the newest "
            "is not, so every table can be rebuilt (`ingest reprocess`) without refetching."
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
    is_complete: Mapped[bool] = mapped_column(
        Boolean,
        server_default=text("true"),
        comment="The newest payload has an author, statistics and a description.",
    )
    complete_fetched_at: Mapped[datetime | None] = mapped_column(
        comment="When complete_payload was fetched; NULL when the newest payload is complete."
    )
    complete_payload: Mapped[dict[str, Any] | None] = mapped_column(
        JSONB,
        comment=(
            "The newest complete aweme_detail, kept while the newest one is degraded (missing "
            "author, statistics or description), so reprocess never rebuilds from less."
        ),
    )
    loader_version: Mapped[int] = mapped_column(
        Integer,
        server_default=text("1"),
        comment=(
            "Version of the flattener that last loaded this payload; older ones are rebuilt "
            "by `ingest db upgrade` / `ingest reprocess --stale`."
        ),
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
