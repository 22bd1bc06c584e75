"""analyst views: work_stats_latest, work_stats_daily, hashtag_stats, author_stats, works_enriched

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25 18:00:00

Hand-written: autogenerate does not see views. The SQL is literal here on purpose, so later code
changes can never alter what this revision creates. Every view and view column gets a COMMENT
(shown by `psql \\d+`); docs/schema.md explains the same in prose.

"Engagement" everywhere means digg + comment + share + collect (NULL counts as 0). play_count is
left out because the web API always reports 0, and admire_count because it is a tip, not a
reaction, and almost always 0.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ENGAGEMENT = (
    "coalesce({p}digg_count, 0) + coalesce({p}comment_count, 0) "
    "+ coalesce({p}share_count, 0) + coalesce({p}collect_count, 0)"
)

WORK_STATS_LATEST = f"""
CREATE VIEW work_stats_latest AS
SELECT
    w.aweme_id,
    s.captured_at,
    w.last_fetched_at AS last_checked_at,
    s.digg_count,
    s.comment_count,
    s.share_count,
    s.collect_count,
    s.play_count,
    s.admire_count,
    s.engagement,
    w.gone_at
FROM works w
LEFT JOIN LATERAL (
    -- One backward step on pk_work_stats (aweme_id, captured_at) per work: never a scan of
    -- every snapshot.
    SELECT
        ws.captured_at, ws.digg_count, ws.comment_count, ws.share_count, ws.collect_count,
        ws.play_count, ws.admire_count,
        {_ENGAGEMENT.format(p="ws.")} AS engagement
    FROM work_stats ws
    WHERE ws.aweme_id = w.aweme_id
    ORDER BY ws.captured_at DESC
    LIMIT 1
) s ON true
"""

_DELTA = "s.{c}_count - lag(s.{c}_count) OVER by_work AS {c}_delta"
_DELTA_COLUMNS = ("digg", "comment", "share", "collect", "play", "admire")
_DELTAS = ",\n    ".join(_DELTA.format(c=c) for c in _DELTA_COLUMNS)

WORK_STATS_DAILY = f"""
CREATE VIEW work_stats_daily AS
SELECT
    d.aweme_id,
    d.day,
    s.captured_at,
    s.digg_count,
    s.comment_count,
    s.share_count,
    s.collect_count,
    s.play_count,
    s.admire_count,
    {_DELTAS}
FROM (
    -- Every UTC calendar day from the work's first snapshot to its last check.
    SELECT w.aweme_id, g.day::date AS day
    FROM works w
    CROSS JOIN LATERAL (
        SELECT min(ws.captured_at) AS first_at FROM work_stats ws WHERE ws.aweme_id = w.aweme_id
    ) f
    CROSS JOIN LATERAL generate_series(
        date_trunc('day', f.first_at AT TIME ZONE 'UTC'),
        date_trunc('day', greatest(w.last_fetched_at, f.first_at) AT TIME ZONE 'UTC'),
        interval '1 day'
    ) AS g(day)
) d
CROSS JOIN LATERAL (
    -- The snapshot in force at the end of the day: the last one captured before midnight UTC.
    -- Snapshots are change-only, so this carries values forward over days without a change.
    SELECT
        ws.captured_at, ws.digg_count, ws.comment_count, ws.share_count, ws.collect_count,
        ws.play_count, ws.admire_count
    FROM work_stats ws
    WHERE ws.aweme_id = d.aweme_id
      AND ws.captured_at < ((d.day + 1)::timestamp AT TIME ZONE 'UTC')
    ORDER BY ws.captured_at DESC
    LIMIT 1
) s
WINDOW by_work AS (PARTITION BY d.aweme_id ORDER BY d.day)
"""

_TOTALS = """
    sum(l.digg_count)::bigint AS total_digg,
    sum(l.comment_count)::bigint AS total_comment,
    sum(l.share_count)::bigint AS total_share,
    sum(l.collect_count)::bigint AS total_collect,
    sum(l.engagement)::bigint AS total_engagement,
    percentile_cont(0.5) WITHIN GROUP (ORDER BY l.engagement) AS median_engagement,
    min(w.created_at) AS first_work_at,
    max(w.created_at) AS last_work_at"""

HASHTAG_STATS = f"""
CREATE VIEW hashtag_stats AS
SELECT
    h.name AS hashtag_name,
    h.hashtag_id,
    h.first_seen_at,
    count(w.aweme_id) AS works,
    count(w.aweme_id) FILTER (WHERE w.gone_at IS NOT NULL) AS gone_works,
    count(DISTINCT w.author_uid) AS authors,{_TOTALS}
FROM hashtags h
LEFT JOIN work_hashtags wh ON wh.hashtag_name = h.name
LEFT JOIN works w ON w.aweme_id = wh.aweme_id
LEFT JOIN work_stats_latest l ON l.aweme_id = w.aweme_id
GROUP BY h.name
"""

AUTHOR_STATS = f"""
CREATE VIEW author_stats AS
SELECT
    a.uid AS author_uid,
    a.sec_uid,
    a.unique_id,
    a.nickname,
    count(w.aweme_id) AS works,
    count(w.aweme_id) FILTER (WHERE w.kind = 'video') AS videos,
    count(w.aweme_id) FILTER (WHERE w.kind = 'image_album') AS image_albums,
    count(w.aweme_id) FILTER (WHERE w.gone_at IS NOT NULL) AS gone_works,{_TOTALS},
    max(w.last_fetched_at) AS last_checked_at
FROM authors a
LEFT JOIN works w ON w.author_uid = a.uid
LEFT JOIN work_stats_latest l ON l.aweme_id = w.aweme_id
GROUP BY a.uid
"""

WORKS_ENRICHED = """
CREATE VIEW works_enriched AS
SELECT
    w.aweme_id,
    w.kind,
    w.description,
    w.created_at,
    w.author_uid,
    a.sec_uid AS author_sec_uid,
    a.unique_id AS author_unique_id,
    a.nickname AS author_nickname,
    w.music_id,
    m.title AS music_title,
    m.author_name AS music_author_name,
    ARRAY(
        SELECT wh.hashtag_name FROM work_hashtags wh
        WHERE wh.aweme_id = w.aweme_id ORDER BY wh.position
    ) AS hashtags,
    (SELECT count(*) FROM work_images wi WHERE wi.aweme_id = w.aweme_id) AS image_count,
    w.duration_ms,
    w.region,
    w.share_url,
    l.digg_count,
    l.comment_count,
    l.share_count,
    l.collect_count,
    l.play_count,
    l.admire_count,
    l.engagement,
    l.captured_at,
    w.last_fetched_at AS last_checked_at,
    w.first_seen_at,
    w.next_check_at,
    w.gone_at,
    w.gone_reason
FROM works w
LEFT JOIN authors a ON a.uid = w.author_uid
LEFT JOIN music m ON m.music_id = w.music_id
LEFT JOIN work_stats_latest l ON l.aweme_id = w.aweme_id
"""

_COUNTS_LATEST = {
    "digg_count": "Likes in the latest snapshot.",
    "comment_count": "Comments in the latest snapshot.",
    "share_count": "Shares in the latest snapshot.",
    "collect_count": "Favourites (collects) in the latest snapshot.",
    "play_count": "Plays in the latest snapshot; always 0 on the web API (0 is not 'unplayed').",
    "admire_count": "Admires (赞赏) in the latest snapshot.",
    "engagement": "digg + comment + share + collect in the latest snapshot (NULLs as 0).",
}
_CAPTURED = "When the latest snapshot was captured (the last time the counts changed)."
_CHECKED = "works.last_fetched_at: the last time the counts were checked, changed or not."
_AGGREGATES = {
    "total_digg": "Sum of the latest likes of these works.",
    "total_comment": "Sum of the latest comments of these works.",
    "total_share": "Sum of the latest shares of these works.",
    "total_collect": "Sum of the latest favourites (collects) of these works.",
    "total_engagement": "Sum of the latest engagement (digg+comment+share+collect).",
    "median_engagement": "Median latest engagement of these works (NULL when none has counts).",
    "first_work_at": "Publish time (created_at) of the oldest of these works.",
    "last_work_at": "Publish time (created_at) of the newest of these works.",
}

VIEWS: tuple[tuple[str, str, str, dict[str, str]], ...] = (
    (
        "work_stats_latest",
        WORK_STATS_LATEST,
        "One row per work (gone works included): its latest statistics snapshot, when that was "
        "captured and when the counts were last checked. Counts are NULL for a work without "
        "any snapshot.",
        {
            "aweme_id": "works.aweme_id.",
            "captured_at": _CAPTURED,
            "last_checked_at": _CHECKED,
            **_COUNTS_LATEST,
            "gone_at": "works.gone_at: when a refresh found the work gone (NULL: available).",
        },
    ),
    (
        "work_stats_daily",
        WORK_STATS_DAILY,
        "One row per work per UTC calendar day, from the day of its first snapshot to the day "
        "of its last check: the counts at the end of the day (carried forward over days "
        "without a change) and the change since the previous day.",
        {
            "aweme_id": "works.aweme_id.",
            "day": "Calendar day in UTC.",
            "captured_at": (
                "When the snapshot in force at the end of the day was captured (an earlier day "
                "when the values were carried forward)."
            ),
            "digg_count": "Likes at the end of the day.",
            "comment_count": "Comments at the end of the day.",
            "share_count": "Shares at the end of the day.",
            "collect_count": "Favourites (collects) at the end of the day.",
            "play_count": "Plays at the end of the day; always 0 on the web API.",
            "admire_count": "Admires (赞赏) at the end of the day.",
            **{
                f"{c}_delta": (
                    f"{c}_count minus the previous day's; 0 on a day without a change, NULL on "
                    "the work's first day (no previous day)."
                )
                for c in _DELTA_COLUMNS
            },
        },
    ),
    (
        "hashtag_stats",
        HASHTAG_STATS,
        "One row per hashtag ever seen: how many works (gone ones included) and authors use it "
        "now, and the total and median latest engagement of those works.",
        {
            "hashtag_name": "hashtags.name: the tag without the leading #.",
            "hashtag_id": "hashtags.hashtag_id: Douyin's challenge id, when known.",
            "first_seen_at": "When the tag was first loaded.",
            "works": "Works whose description uses the tag (gone works included).",
            "gone_works": "How many of those works are gone (works.gone_at set).",
            "authors": "Distinct authors of those works.",
            **_AGGREGATES,
        },
    ),
    (
        "author_stats",
        AUTHOR_STATS,
        "One row per author: works ingested (gone ones included), their latest total "
        "engagement, and the publish times of the first and last work. Works whose author is "
        "unknown (works.author_uid NULL) are in no row.",
        {
            "author_uid": "authors.uid.",
            "sec_uid": "authors.sec_uid (profile URLs use it).",
            "unique_id": "authors.unique_id: the custom Douyin handle, NULL when none.",
            "nickname": "authors.nickname as last seen.",
            "works": "Works by this author in the database (gone works included).",
            "videos": "How many of them are videos.",
            "image_albums": "How many of them are image albums.",
            "gone_works": "How many of them are gone (works.gone_at set).",
            **_AGGREGATES,
            "last_checked_at": "The most recent check of any of these works' counts.",
        },
    ),
    (
        "works_enriched",
        WORKS_ENRICHED,
        "One row per work (gone works included) with its author, music, hashtags and latest "
        "counts: the table to start from.",
        {
            "aweme_id": "works.aweme_id: Douyin work id.",
            "kind": "video | image_album | article | other.",
            "description": "Caption text, hashtags and mentions included.",
            "created_at": "When the work was published.",
            "author_uid": "authors.uid of the creator (NULL when unknown).",
            "author_sec_uid": "authors.sec_uid of the creator.",
            "author_unique_id": "authors.unique_id: the creator's custom handle, NULL when none.",
            "author_nickname": "authors.nickname of the creator, as last seen.",
            "music_id": "music.music_id (NULL when no sound).",
            "music_title": "music.title.",
            "music_author_name": "music.author_name: the track author as shown by Douyin.",
            "hashtags": "The work's hashtags (without #) in caption order; empty when none.",
            "image_count": "Images in the album (0 for videos).",
            "duration_ms": "Video length in milliseconds; 0 for image albums.",
            "region": "Region code reported by Douyin.",
            "share_url": "Canonical share URL.",
            **_COUNTS_LATEST,
            "captured_at": _CAPTURED,
            "last_checked_at": _CHECKED,
            "first_seen_at": "When the work was first loaded.",
            "next_check_at": "When `ingest refresh` will check the counts again.",
            "gone_at": "When a refresh found the work gone (NULL: available).",
            "gone_reason": "Why the work is gone, e.g. status_self_see (NULL while available).",
        },
    ),
)


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def upgrade() -> None:
    for name, sql, comment, columns in VIEWS:
        op.execute(sql)
        op.execute(f"COMMENT ON VIEW {name} IS {_literal(comment)}")
        for column, column_comment in columns.items():
            op.execute(f"COMMENT ON COLUMN {name}.{column} IS {_literal(column_comment)}")


def downgrade() -> None:
    for name, _, _, _ in reversed(VIEWS):
        op.execute(f"DROP VIEW {name}")
