-- Example queries for analysts. Every statement below runs in the test suite
-- (tests/test_queries.py) against a database loaded over several simulated refreshes.
--
-- Conventions:
-- * "Now" is the latest check in the data, max(works.last_fetched_at), not now(): the answers
--   then describe the data as loaded, and stay right on a copy restored months later.
--   For a live dashboard, replace the `anchor` CTE with `SELECT now() AS now_at, ...`.
-- * Days are UTC calendar days (work_stats_daily.day).
-- * engagement = digg + comment + share + collect (play_count is always 0 on the web API).
-- * Gone works (works.gone_at set) are included unless a query says otherwise.
-- Each statement is preceded by a comment saying what it answers, and ends with a semicolon.

-- Top growing works this week: likes gained over the last 7 days of data.
WITH anchor AS (
    SELECT (max(last_fetched_at) AT TIME ZONE 'UTC')::date AS today FROM works
)
SELECT d.aweme_id,
       e.author_nickname,
       e.kind,
       sum(d.digg_delta) AS likes_gained_7d,
       e.digg_count AS likes_now,
       e.share_url
FROM work_stats_daily d
JOIN works_enriched e USING (aweme_id)
CROSS JOIN anchor
WHERE d.day > anchor.today - 7
GROUP BY d.aweme_id, e.author_nickname, e.kind, e.digg_count, e.share_url
HAVING sum(d.digg_delta) > 0
ORDER BY likes_gained_7d DESC, d.aweme_id
LIMIT 20;

-- Hashtag trends: which hashtags' works gained the most engagement over the last 7 days?
WITH anchor AS (
    SELECT (max(last_fetched_at) AT TIME ZONE 'UTC')::date AS today FROM works
),
gains AS (
    SELECT d.aweme_id,
           sum(coalesce(d.digg_delta, 0) + coalesce(d.comment_delta, 0)
               + coalesce(d.share_delta, 0) + coalesce(d.collect_delta, 0)) AS gained
    FROM work_stats_daily d CROSS JOIN anchor
    WHERE d.day > anchor.today - 7
    GROUP BY d.aweme_id
)
SELECT wh.hashtag_name,
       count(*) AS works,
       sum(g.gained) AS engagement_gained_7d,
       round(avg(g.gained), 1) AS avg_gained_per_work
FROM work_hashtags wh
JOIN gains g USING (aweme_id)
GROUP BY wh.hashtag_name
ORDER BY engagement_gained_7d DESC, wh.hashtag_name
LIMIT 20;

-- Strongest hashtags overall: median latest engagement of their works (tags with >= 2 works).
SELECT hashtag_name, works, authors, total_engagement, median_engagement, last_work_at
FROM hashtag_stats
WHERE works >= 2
ORDER BY median_engagement DESC NULLS LAST, hashtag_name
LIMIT 20;

-- Author leaderboard: total latest engagement, with works and engagement per work.
SELECT author_uid,
       nickname,
       sec_uid,
       works,
       total_engagement,
       round(total_engagement::numeric / nullif(works, 0), 1) AS engagement_per_work,
       first_work_at,
       last_work_at
FROM author_stats
WHERE works > 0
ORDER BY total_engagement DESC NULLS LAST, author_uid
LIMIT 20;

-- Author leaderboard by growth: likes gained by each author's works over the last 7 days.
WITH anchor AS (
    SELECT (max(last_fetched_at) AT TIME ZONE 'UTC')::date AS today FROM works
)
SELECT w.author_uid,
       a.nickname,
       count(DISTINCT d.aweme_id) AS works_checked,
       sum(d.digg_delta) AS likes_gained_7d
FROM work_stats_daily d
JOIN works w USING (aweme_id)
JOIN authors a ON a.uid = w.author_uid
CROSS JOIN anchor
WHERE d.day > anchor.today - 7
GROUP BY w.author_uid, a.nickname
ORDER BY likes_gained_7d DESC NULLS LAST, w.author_uid
LIMIT 20;

-- Albums vs videos: how does engagement compare by kind of work?
SELECT kind,
       count(*) AS works,
       round(avg(engagement), 1) AS avg_engagement,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY engagement) AS median_engagement,
       round(avg(digg_count), 1) AS avg_likes,
       round(1000.0 * sum(comment_count) / nullif(sum(digg_count), 0), 1) AS comments_per_1000_likes,
       round(1000.0 * sum(collect_count) / nullif(sum(digg_count), 0), 1) AS collects_per_1000_likes
FROM works_enriched
GROUP BY kind
ORDER BY kind;

-- Works that disappeared: what was gone, when we noticed, why, and its last known counts.
SELECT aweme_id,
       author_nickname,
       kind,
       gone_at,
       gone_reason,
       last_checked_at AS last_seen_available_at,
       digg_count AS last_known_likes,
       share_url
FROM works_enriched
WHERE gone_at IS NOT NULL
ORDER BY gone_at DESC, aweme_id;

-- Posting-time heatmap: works and median engagement by weekday and hour, in China time.
SELECT extract(isodow FROM created_at AT TIME ZONE 'Asia/Shanghai')::int AS weekday_1_is_monday,
       extract(hour FROM created_at AT TIME ZONE 'Asia/Shanghai')::int AS hour_cst,
       count(*) AS works,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY engagement) AS median_engagement
FROM works_enriched
WHERE created_at IS NOT NULL
GROUP BY 1, 2
ORDER BY 1, 2;

-- Most used sounds: how many works and authors use each track, and their engagement.
SELECT m.music_id,
       m.title,
       m.author_name,
       m.is_original,
       count(*) AS works,
       count(DISTINCT w.author_uid) AS authors,
       sum(l.engagement) AS total_engagement
FROM music m
JOIN works w ON w.music_id = m.music_id
LEFT JOIN work_stats_latest l ON l.aweme_id = w.aweme_id
GROUP BY m.music_id
ORDER BY works DESC, total_engagement DESC NULLS LAST, m.music_id
LIMIT 20;

-- Engagement by collection episode: do later episodes of a collection (合集) keep the audience?
SELECT c.mix_id,
       c.name AS collection,
       w.collection_episode AS episode,
       c.episodes AS episodes_published,
       count(*) AS works,
       sum(l.engagement) AS total_engagement
FROM collections c
JOIN works w ON w.collection_id = c.mix_id
LEFT JOIN work_stats_latest l ON l.aweme_id = w.aweme_id
GROUP BY c.mix_id, c.name, c.episodes, w.collection_episode
ORDER BY c.mix_id, episode;

-- Top places: works tagged with each place (POI), their authors and engagement.
SELECT p.poi_id,
       p.name AS place,
       p.city,
       count(*) AS works,
       count(DISTINCT w.author_uid) AS authors,
       sum(l.engagement) AS total_engagement
FROM places p
JOIN works w ON w.poi_id = p.poi_id
LEFT JOIN work_stats_latest l ON l.aweme_id = w.aweme_id
GROUP BY p.poi_id
ORDER BY works DESC, total_engagement DESC NULLS LAST, p.poi_id;

-- Category mix per author: what share of each author's works falls in each top-level category?
SELECT w.author_uid,
       a.nickname,
       c.name AS category,
       count(*) AS works,
       round(100.0 * count(*) / sum(count(*)) OVER (PARTITION BY w.author_uid), 1)
           AS pct_of_author_works
FROM works w
JOIN authors a ON a.uid = w.author_uid
JOIN work_categories wc ON wc.aweme_id = w.aweme_id AND wc.level = 1
JOIN categories c ON c.category_id = wc.category_id
GROUP BY w.author_uid, a.nickname, c.name
ORDER BY w.author_uid, works DESC, category;

-- Account reach: the newest known followers and likes received of the most liked authors.
SELECT author_uid,
       nickname,
       follower_count,
       total_favorited,
       aweme_count,
       captured_at
FROM author_counts_latest
ORDER BY total_favorited DESC NULLS LAST, author_uid
LIMIT 20;

-- Daily totals: likes across all tracked works at the end of each day, and the day's gain.
SELECT day,
       count(*) AS works_tracked,
       sum(digg_count) AS total_likes,
       sum(digg_delta) AS likes_gained
FROM work_stats_daily
GROUP BY day
ORDER BY day;

-- Most discussed works: comments per like, among works with at least 1,000 likes.
SELECT aweme_id,
       author_nickname,
       digg_count,
       comment_count,
       round(comment_count::numeric / digg_count, 4) AS comments_per_like,
       description
FROM works_enriched
WHERE digg_count >= 1000
ORDER BY comments_per_like DESC, aweme_id
LIMIT 20;

-- Stalled works: checked in the last 7 days, but their counts have not changed for 7 days.
WITH anchor AS (SELECT max(last_fetched_at) AS now_at FROM works)
SELECT l.aweme_id,
       e.author_nickname,
       l.captured_at AS last_change_at,
       l.last_checked_at,
       l.digg_count
FROM work_stats_latest l
JOIN works_enriched e USING (aweme_id)
CROSS JOIN anchor
WHERE l.gone_at IS NULL
  AND l.last_checked_at >= anchor.now_at - interval '7 days'
  AND l.captured_at < anchor.now_at - interval '7 days'
ORDER BY l.captured_at, l.aweme_id;

-- Most mentioned accounts: who do creators @mention, and in how many works?
SELECT coalesce(a.nickname, m.nickname) AS nickname,
       m.uid,
       count(*) AS mentions,
       count(DISTINCT w.author_uid) AS mentioned_by_authors
FROM work_mentions m
JOIN works w ON w.aweme_id = m.aweme_id
LEFT JOIN authors a ON a.uid = m.uid
GROUP BY coalesce(a.nickname, m.nickname), m.uid
ORDER BY mentions DESC, m.uid
LIMIT 20;

-- Data freshness: how long ago were the counts of available works last checked?
WITH anchor AS (SELECT max(last_fetched_at) AS now_at FROM works)
SELECT CASE
           WHEN w.last_fetched_at >= anchor.now_at - interval '1 day' THEN '1: within a day'
           WHEN w.last_fetched_at >= anchor.now_at - interval '7 days' THEN '2: within a week'
           ELSE '3: older'
       END AS last_checked,
       count(*) AS works,
       count(*) FILTER (WHERE w.next_check_at <= anchor.now_at) AS due_for_refresh
FROM works w CROSS JOIN anchor
WHERE w.gone_at IS NULL
GROUP BY 1
ORDER BY 1;

-- Input links: what became of every link read, by outcome and reason.
SELECT last_outcome, last_reason, count(*) AS links, sum(attempts) AS http_attempts
FROM share_links
GROUP BY last_outcome, last_reason
ORDER BY links DESC, last_outcome, last_reason;

-- Recent runs: what each ingest/refresh run did, and how long it took.
SELECT run_id,
       kind,
       status,
       started_at,
       finished_at - started_at AS took,
       counts
FROM ingest_runs
ORDER BY run_id DESC
LIMIT 20;
