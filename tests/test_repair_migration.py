"""Upgrading a database loaded by the previous version (schema 0006) gives the same content as a
fresh load of the same payloads, and leaves work state alone."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.engine import make_url

from pipeline.db.load import load_works
from pipeline.db.migrate import alembic_config, upgrade
from pipeline.douyin import clean_json
from pipeline.flatten import flatten
from test_facts_over_time import FIXTURES, _astral_album, content, state

T0 = datetime(2026, 10, 1, 8, 0, tzinfo=UTC)


def _payloads() -> list[dict[str, Any]]:
    video = json.loads((FIXTURES / "video_detail_7071967230287744267.json").read_text())
    video2 = json.loads((FIXTURES / "video_postlist_7253290037918354691.json").read_text())
    astral = _astral_album()
    astral["aweme_id"] = astral["group_id"] = "7232626237586312486"
    album = json.loads((FIXTURES / "album_postlist_7232626237586312485.json").read_text())
    return [video["aweme_detail"], album["aweme_list"][0], video2["aweme_list"][0], astral]


@pytest.fixture
def database(admin_engine: Engine, pg_server_url: str) -> Iterator[Engine]:
    """An empty database of its own (not the template: this one starts at an old revision)."""
    name = f"ingest_repair_{id(object())}"
    with admin_engine.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    url = make_url(pg_server_url).set(database=name).render_as_string(hide_password=False)
    engine = create_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()
        with admin_engine.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


def _as_main_loaded_it(conn: Connection, payloads: list[dict[str, Any]]) -> None:
    """Rows as the loader of schema 0006 wrote them, with its known faults: music.is_original
    from the wrong flag, hashtag offsets in UTF-16 units, the 100x100 avatar path, follower
    counts of 0 from the detail endpoint, and gone_reason with a 'gone: ' prefix."""
    for i, payload in enumerate(payloads):
        at = T0 + timedelta(minutes=i)
        aweme_id = int(payload["aweme_id"])
        author, music = payload["author"], payload["music"]
        conn.execute(
            text(
                "INSERT INTO authors (uid, sec_uid, nickname, avatar_uri, follower_count, "
                "total_favorited, first_seen_at, last_seen_at) VALUES (:uid, :sec, :nick, "
                ":avatar, :followers, :liked, :at, :at) ON CONFLICT DO NOTHING"
            ),
            {
                "uid": int(author["uid"]),
                "sec": author["sec_uid"],
                "nick": author["nickname"],
                "avatar": author["avatar_thumb"]["uri"],
                "followers": author["follower_count"],
                "liked": author["total_favorited"],
                "at": at,
            },
        )
        conn.execute(
            text(
                "INSERT INTO music (music_id, title, is_original, first_seen_at, last_seen_at) "
                "VALUES (:id, :title, :original, :at, :at) ON CONFLICT DO NOTHING"
            ),
            {"id": int(music["id_str"]), "title": music["title"], "original": False, "at": at},
        )
        conn.execute(
            text(
                "INSERT INTO works (aweme_id, author_uid, music_id, kind, description, "
                "created_at, first_seen_at, last_fetched_at, next_check_at) VALUES (:id, :uid, "
                ":music, 'video', :desc, to_timestamp(:created), :at, :at, :next)"
            ),
            {
                "id": aweme_id,
                "uid": int(author["uid"]),
                "music": int(music["id_str"]),
                "desc": payload["desc"].replace("\x00", ""),
                "created": payload["create_time"],
                "at": at,
                "next": at + timedelta(days=7 + i),
            },
        )
        for position, tag in enumerate(e for e in payload["text_extra"] if e["type"] == 1):
            conn.execute(
                text(
                    "INSERT INTO hashtags (name, first_seen_at) VALUES (:name, :at) "
                    "ON CONFLICT DO NOTHING"
                ),
                {"name": tag["hashtag_name"], "at": at},
            )
            conn.execute(
                text("INSERT INTO work_hashtags VALUES (:id, :name, :position, :start, :end)"),
                {
                    "id": aweme_id,
                    "name": tag["hashtag_name"],
                    "position": position,
                    "start": tag["start"],
                    "end": tag["end"],
                },
            )
        stats = payload["statistics"]
        conn.execute(
            text(
                "INSERT INTO work_stats VALUES (:id, :at, :digg, :comment, :share, :collect, "
                ":play, :admire)"
            ),
            {
                "id": aweme_id,
                "at": at,
                **{k: stats.get(f"{k}_count") for k in ("digg", "comment", "share", "collect")},
                "play": stats.get("play_count"),
                "admire": stats.get("admire_count"),
            },
        )
        conn.execute(
            text("INSERT INTO raw_payloads VALUES (:id, :at, CAST(:payload AS jsonb))"),
            {"id": aweme_id, "at": at, "payload": json.dumps(clean_json(payload))},
        )
    conn.execute(
        text(
            "UPDATE works SET gone_at = :at, gone_reason = 'gone: status_self_see' "
            "WHERE aweme_id = 7253290037918354691"
        ),
        {"at": T0 + timedelta(days=2)},
    )


def test_upgrade_repairs_content_and_keeps_state(database: Engine, db: Connection) -> None:
    payloads = _payloads()
    with database.begin() as conn:
        command.upgrade(alembic_config(conn), "0006")
        _as_main_loaded_it(conn, payloads)
    with database.connect() as conn:
        state_before = state(conn)

    rebuilt = upgrade(database)  # what `ingest db upgrade` runs: migrations, then the repair

    assert rebuilt == len(payloads)
    load_works(db, [flatten(p, T0 + timedelta(minutes=i)) for i, p in enumerate(payloads)])
    with database.connect() as conn:
        after_state = state(conn)
        upgraded = content(conn)
    fresh = content(db)
    for table_name in fresh:
        assert upgraded[table_name] == fresh[table_name], table_name
    # State is the runs' business: unchanged, except gone_reason in its canonical form.
    expected_state = [(*row[:4], "status_self_see") if row[4] else row for row in state_before]
    assert after_state == expected_state
    assert upgrade(database) == 0  # nothing left to repair
