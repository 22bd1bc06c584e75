"""flatten(): exact rows from every real fixture, literal edge cases, and property tests that
mutate the real payloads and check flatten never raises anything but NotAWork."""

from __future__ import annotations

import copy
import dataclasses
import json
import types
import typing
import unicodedata
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.douyin import clean_json, clean_label
from pipeline.flatten import (
    AuthorRow,
    CategoryRow,
    CollectionRow,
    FlatWork,
    HashtagRow,
    ImageRow,
    MentionRow,
    MusicRow,
    NotAWork,
    PlaceRow,
    StatsRow,
    WorkRow,
    flatten,
)

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "upstream"
ENVELOPES = FIXTURES / "amagi_5.8.0_http_envelopes"
FETCHED = datetime(2023, 8, 4, 12, 0, tzinfo=UTC)
INT64_MAX = 2**63 - 1
INT32_MAX = 2**31 - 1


def _load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


VIDEO = _load("video_detail_7071967230287744267.json")["aweme_detail"]
ALBUM = _load("album_postlist_7232626237586312485.json")["aweme_list"][0]
VIDEO2 = _load("video_postlist_7253290037918354691.json")["aweme_list"][0]
AMAGI_VIDEO = _load("amagi_5.8.0_http_envelopes/ok_video.http200.json")["data"]["aweme_detail"]
AMAGI_ALBUM = _load("amagi_5.8.0_http_envelopes/ok_album.http200.json")["data"]["aweme_detail"]
REAL = {
    "video": VIDEO,
    "album": ALBUM,
    "video2": VIDEO2,
    "amagi_video": AMAGI_VIDEO,
    "amagi_album": AMAGI_ALBUM,
}

# --- real fixtures, exact values -----------------------------------------------------------


@pytest.mark.parametrize("payload", [VIDEO, AMAGI_VIDEO], ids=["douyin", "amagi"])
def test_video_7071967230287744267(payload: dict[str, Any]) -> None:
    flat = flatten(payload, FETCHED)

    assert flat.work == WorkRow(
        aweme_id=7071967230287744267,
        author_uid=3689586767443357,
        music_id=7049808807056149285,
        kind="video",
        aweme_type=0,
        media_type=4,
        description="其实早就和你表白过了 在看你的每个眼神里",
        created_at=datetime(2022, 3, 6, 12, 44, 43, tzinfo=UTC),
        created_at_from_id=datetime(2022, 3, 6, 12, 44, 42, tzinfo=UTC),
        duration_ms=9611,
        video_width=1080,
        video_height=1920,
        video_ratio="540p",
        cover_uri="tos-cn-p-0015/67d4a42fb52b4b4fbbc1ba2b745e1304",
        region="CN",
        share_url="https://www.iesdouyin.com/share/video/7071967230287744267/",
        group_id=7071967230287744267,
        is_ads=False,
        is_top=False,
        ip_label=None,
        collection_id=None,
        collection_episode=None,
        poi_id=None,
        is_delete=False,
        is_prohibited=False,
        is_private=False,
        in_reviewing=False,
        allow_share=True,
        fetched_at=FETCHED,
    )
    assert flat.author == AuthorRow(
        uid=3689586767443357,
        sec_uid="MS4wLjABAAAAERbHksh_jtLRYjO8hOx9clHF9tJDBsZmhcL0VoPLItYXWg8H0jwYJd3mJOxiIGsU",
        unique_id="bailitufu8",
        short_id="2830954084",
        nickname="百里TUFU",
        signature="遇见都是缘分\n🧣&🍠：半夜去杀猪x\n🛰️：JRCM0018888\n日常不定揪🎁@久然文化",
        # No author.avatar_uri here: the thumbnail's uri without its size prefix.
        avatar_uri="aweme-avatar/tos-cn-avt-0015_b4a51067e5d3c41d5d7758f14532ace6",
        verification_type=1,
        custom_verify=None,
        enterprise_verify_reason=None,
        follower_count=None,  # the detail endpoint reports 0: hidden, not zero
        following_count=0,
        total_favorited=43831234,
        aweme_count=None,
        favoriting_count=1622,
        seen_at=FETCHED,
    )
    # In the amagi envelope the numeric music.id is rounded to 7049808807056150000.
    assert flat.music == MusicRow(
        music_id=7049808807056149285,
        title="碑海北的浪漫bgm",
        author_name="碑海北",
        album=None,
        duration_s=22,
        is_original=True,  # is_original_sound; the payload's is_original says false
        is_pgc=False,
        owner_uid=72609174662,
        owner_sec_uid="MS4wLjABAAAArB7A1MV09AIHOoj2P42i1n-fC7WW4MCxoMZ6W2hlD_I",
        owner_nickname="碑海北",
        owner_handle="z810807031",
        cover_uri="100x100/aweme-avatar/tos-cn-avt-0015_cfdff2854a9af33f6cbeb44b2f57ebe6",
    )
    assert flat.stats == StatsRow(
        aweme_id=7071967230287744267,
        captured_at=FETCHED,
        digg_count=165539,
        comment_count=7343,
        share_count=23537,
        collect_count=3799,
        play_count=0,
        admire_count=0,
    )
    assert flat.hashtags == ()
    assert flat.mentions == ()
    assert flat.images is None  # `images: null`: the payload does not list any
    assert flat.categories == (
        CategoryRow(7071967230287744267, 1, 2006, "颜值"),
        CategoryRow(7071967230287744267, 2, 2006002, "美女"),
    )
    assert (flat.collection, flat.place, flat.complete) == (None, None, True)
    assert flat.raw is payload


def test_amagi_envelope_really_carries_the_rounded_music_id() -> None:
    # Guards the test above: if the fixture stopped being rounded it would prove nothing.
    assert AMAGI_VIDEO["music"]["id"] == 7049808807056150000
    assert AMAGI_ALBUM["music"]["id"] == 7203284398119225000


ALBUM_ID = 7232626237586312485


@pytest.mark.parametrize("payload", [ALBUM, AMAGI_ALBUM], ids=["douyin", "amagi"])
def test_album_7232626237586312485(payload: dict[str, Any]) -> None:
    flat = flatten(payload, FETCHED)
    work = flat.work

    assert work.aweme_id == ALBUM_ID
    assert work.kind == "image_album"
    assert (work.aweme_type, work.media_type) == (68, 2)
    assert (
        work.description == "辣妹统治世界٩(˃̶͈̀௰˂̶͈́)و。#ootd穿搭  #氛围感 #女友穿搭#辣妹穿搭 #生活碎片"
    )
    assert work.created_at == datetime(2023, 5, 13, 11, 23, 49, tzinfo=UTC)
    assert work.duration_ms == 0
    # The album's `video` (1440x1918) is its background music, not a video.
    assert (work.video_width, work.video_height) == (None, None)
    assert work.share_url == "https://www.iesdouyin.com/share/video/7232626237586312485/"
    assert work.author_uid == 64115698134
    assert work.music_id == 7203284398119225346

    assert flat.hashtags == (
        HashtagRow(ALBUM_ID, 0, "ootd穿搭", 1645837370349579, 20, 27),
        HashtagRow(ALBUM_ID, 1, "氛围感", 1640936621124619, 29, 33),
        HashtagRow(ALBUM_ID, 2, "女友穿搭", 1621254417954830, 34, 39),
        HashtagRow(ALBUM_ID, 3, "辣妹穿搭", 1661587378647047, 39, 44),
        HashtagRow(ALBUM_ID, 4, "生活碎片", 1605855447219300, 45, 50),
    )
    assert [(i.position, i.uri, i.width, i.height) for i in flat.images] == [
        (0, "tos-cn-i-0813c001/6daa91f096d9487394e8345858769ba2", 1440, 1918),
        (1, "tos-cn-i-0813/45bb5491af38446e9b4671ec06a76a5a", 1440, 1920),
        (2, "tos-cn-i-0813c001/367fbd724765454dab3cdc1fe48cf8fc", 1440, 1918),
    ]
    assert flat.images[0].url == (
        "https://p3-pc-sign.douyinpic.com/tos-cn-i-0813c001/6daa91f096d9487394e8345858769ba2"
        "~tplv-dy-aweme-images:q75.webp?x-expires=1693587600"
        "&x-signature=ggkrFgYjN6KC%2Bs%2FVZG4gMHyuXYY%3D&from=3213915784"
        "&s=PackSourceEnum_PUBLISH&se=false&sc=image&biz_tag=aweme_images"
        "&l=20230803010005712927738F4143360D62"
    )
    assert all(i.aweme_id == ALBUM_ID for i in flat.images)
    assert flat.music == MusicRow(
        music_id=7203284398119225346,
        title="BABYDOLL (新版)",
        author_name="星野新一",
        album="多秋",
        duration_s=60,
        is_original=False,
        is_pgc=True,
        owner_uid=None,
        owner_sec_uid=None,
        owner_nickname=None,
        owner_handle=None,
        cover_uri="tos-cn-v-2774c002/oofuwAByVBRVAxCAhPWBCsNAoSoNE9pAWtuwEz",
    )
    assert flat.collection == CollectionRow(7238089454588528701, "穿搭图文(⁎⁍̴̛ᴗ⁍̴̛⁎)", None, 9)
    assert flat.work.collection_episode == 1
    assert flat.place == PlaceRow(
        6601123594271459336, "武汉市", "武汉市", "湖北省", "中国", 30.59573, 114.298972
    )
    assert flat.categories == (
        CategoryRow(ALBUM_ID, 1, 2003, "时尚"),
        CategoryRow(ALBUM_ID, 2, 2003007, "穿搭"),
        CategoryRow(ALBUM_ID, 3, 2003007011, "女装"),
    )
    assert (work.group_id, work.is_top, work.is_ads, work.video_ratio) == (
        ALBUM_ID,
        False,
        None,
        None,
    )
    assert flat.author is not None
    assert (flat.author.sec_uid, flat.author.nickname, flat.author.unique_id) == (
        "MS4wLjABAAAA-hFsLR8fSnbmWhrmAEnGvYgG6rM2txNpNm2oT9WSrIQ",
        "肥牛卷儿（我爱吴世勋",
        None,
    )
    assert (
        flat.author.follower_count,
        flat.author.following_count,
        flat.author.total_favorited,
    ) == (457352, 4, 14192407)
    assert (flat.author.aweme_count, flat.author.favoriting_count) == (208, 133)
    assert flat.author.avatar_uri == "aweme-avatar/tos-cn-avt-0015_0f0f760731f3a659ad557fb9718a7019"
    assert flat.stats == StatsRow(ALBUM_ID, FETCHED, 20629, 166, 406, 1572, 0, 1)


def test_video_7253290037918354691() -> None:
    flat = flatten(VIDEO2, FETCHED)
    aweme_id = 7253290037918354691

    # This payload's group_id (7253008209626156349) differs: aweme_id must win.
    assert flat.work.aweme_id == aweme_id
    assert flat.work.kind == "video"
    assert flat.work.duration_ms == 64043
    assert (flat.work.video_width, flat.work.video_height) == (1920, 1200)
    assert flat.work.region is None  # "" upstream
    assert flat.work.created_at == datetime(2023, 7, 8, 4, 0, 18, tzinfo=UTC)
    assert flat.hashtags == (
        HashtagRow(aweme_id, 0, "电影冰雪狙击2", 1770183396544590, 20, 28),
        HashtagRow(aweme_id, 1, "冰雪狙击2老戏骨飙戏", 1770821731138571, 30, 41),
    )
    assert flat.author is not None
    assert flat.author.uid == 96719499963
    assert flat.author.custom_verify == "影视自媒体"
    assert flat.music is not None
    assert (flat.music.music_id, flat.music.owner_uid) == (7253290130763467557, 96719499963)
    assert flat.stats == StatsRow(aweme_id, FETCHED, 21705, 48, 63, 330, 0, 0)


# --- literal edge cases --------------------------------------------------------------------

AWEME_ID = "7071967230287744267"


def _minimal(**extra: Any) -> dict[str, Any]:
    return {"aweme_id": AWEME_ID, **extra}


def test_minimal_payload_gives_unknowns_not_errors() -> None:
    flat = flatten(_minimal(), FETCHED)
    estimate = datetime(2022, 3, 6, 12, 44, 42, tzinfo=UTC)  # top 32 bits of the id
    assert flat.work == WorkRow(
        7071967230287744267, None, None, None, None, None, None, None, estimate, *[None] * 19,
        FETCHED,
    )  # fmt: skip
    assert (flat.author, flat.music, flat.stats) == (None, None, None)
    # Absent lists say nothing (None), unlike empty ones.
    assert (flat.hashtags, flat.mentions, flat.images, flat.categories) == (None,) * 4
    assert flat.complete is False


def test_nulls_where_objects_and_lists_were_expected() -> None:
    nulls = dict.fromkeys(
        ("author", "music", "statistics", "status", "video", "text_extra", "images", "desc",
         "share_url", "create_time", "duration", "region", "aweme_type", "media_type"),
    )  # fmt: skip
    with_nulls = flatten(_minimal(**nulls), FETCHED)
    assert dataclasses.replace(with_nulls, raw={}) == dataclasses.replace(
        flatten(_minimal(), FETCHED), raw={}
    )


@pytest.mark.parametrize("junk", [5, "#tag", {"type": 1, "hashtag_name": "x"}, True, 1.5])
def test_text_extra_and_images_that_are_not_lists_are_ignored(junk: Any) -> None:
    flat = flatten(_minimal(text_extra=junk, images=junk, aweme_type=0), FETCHED)
    assert (flat.hashtags, flat.mentions, flat.images) == (None, None, None)
    assert flat.work.kind == "video"


def test_wrong_types_become_unknown() -> None:
    flat = flatten(
        _minimal(
            statistics={
                "digg_count": "12",
                "comment_count": True,
                "share_count": -1,
                "collect_count": 2**63,
                "play_count": 3.0,
                "admire_count": 3.5,
            },
            status={"is_delete": "false", "is_prohibited": 1, "private_status": "2"},
            author={"uid": "3689586767443357", "nickname": 5, "follower_count": "1_000"},
            desc=["not", "text"],
            region=0,
            create_time="1646570683",
            duration=" 9611",
            video={"duration": 9611, "width": "1080", "height": 0},
            aweme_type=2**40,
        ),
        FETCHED,
    )
    assert flat.stats == StatsRow(7071967230287744267, FETCHED, 12, None, None, None, 3, None)
    assert (flat.work.is_delete, flat.work.is_prohibited, flat.work.is_private) == (
        None,
        True,
        True,
    )
    assert flat.author is not None
    assert (flat.author.nickname, flat.author.follower_count) == (None, None)
    assert flat.work.description is None
    assert flat.work.region is None
    assert flat.work.created_at == datetime(2022, 3, 6, 12, 44, 43, tzinfo=UTC)
    assert flat.work.duration_ms == 9611  # top-level unusable: falls back to video.duration
    assert (flat.work.video_width, flat.work.video_height) == (1080, None)
    assert flat.work.aweme_type is None  # does not fit the INTEGER column


@pytest.mark.parametrize(
    ("create_time", "expected"),
    [
        (0, None),
        (-5, None),
        (1646570683000, None),  # milliseconds by mistake
        (1420070400, None),  # 2015: before Douyin existed
        (1646570683.0, datetime(2022, 3, 6, 12, 44, 43, tzinfo=UTC)),
        (1646570683.5, None),
    ],
)
def test_created_at(create_time: Any, expected: datetime | None) -> None:
    assert flatten(_minimal(create_time=create_time), FETCHED).work.created_at == expected


def test_text_extra_hashtags_mentions_and_other_types() -> None:
    desc = "hi @小明 and @Bob #a #b #a\n😀"
    text_extra = [
        {"type": 5, "start": 0, "end": 2, "search_text": "hi"},  # search keyword: ignored
        None,
        "junk",
        {"type": 0, "start": 3, "end": 6, "user_id": "1234567890123", "sec_uid": "MS4wLjAB_x"},
        {"type": 1, "start": 16, "end": 18, "hashtag_name": " a ", "hashtag_id": "16458"},
        {"type": 1, "start": 0, "end": 0, "hashtag_name": ""},
        {"type": 1, "hashtag_name": None},
        {"type": 0, "start": 11, "end": 15, "sec_uid": "MS4wLjAB_bob", "user_id": ""},
        {"type": 0, "start": 0, "end": 2},  # a mention of nobody
        {"type": "1", "start": 19, "end": 21, "hashtag_name": "b", "hashtag_id": ""},
        {"type": 1, "start": 22, "end": 24, "hashtag_name": "a", "hashtag_id": "99"},
        {"type": 1, "start": -3, "end": 2**40, "hashtag_name": "c", "hashtag_id": 7.5},
        {"type": True, "hashtag_name": "not-a-type"},
    ]
    flat = flatten(_minimal(desc=desc, text_extra=text_extra), FETCHED)
    aid = 7071967230287744267
    assert flat.hashtags == (
        HashtagRow(aid, 0, "a", 16458, 16, 18),
        HashtagRow(aid, 1, "b", None, 19, 21),
        HashtagRow(aid, 2, "c", None, None, None),
    )
    assert flat.mentions == (
        MentionRow(aid, 0, 1234567890123, "MS4wLjAB_x", "小明", 3, 6),
        MentionRow(aid, 1, None, "MS4wLjAB_bob", "Bob", 11, 15),
    )
    assert flat.work.description == desc


def test_mention_offsets_counted_in_utf16_units_still_find_the_name() -> None:
    desc = "😀😀 @Amy"  # each emoji is 2 UTF-16 units: "@Amy" is units 5..9, code points 3..7
    te = [{"type": 0, "start": 5, "end": 9, "user_id": "42"}]
    mentions = flatten(_minimal(desc=desc, text_extra=te), FETCHED).mentions
    assert mentions is not None
    (mention,) = mentions
    # Stored as code points, what PostgreSQL's substring counts.
    assert (mention.nickname, mention.uid, mention.start, mention.end) == ("Amy", 42, 3, 7)


def test_nul_and_lone_surrogates_are_replaced_one_for_one() -> None:
    flat = flatten(
        _minimal(
            desc="a\x00b\n😀",
            author={"uid": "1", "nickname": "x\ud83dy", "signature": "\x00"},
            text_extra=[{"type": 1, "hashtag_name": "t\x00ag"}],
        ),
        FETCHED,
    )
    assert flat.work.description == "a\ufffdb\n😀"  # same length: offsets keep their meaning
    assert flat.author is not None
    assert flat.author.nickname == "x?y"
    assert flat.author.signature == "\ufffd"
    assert [h.name for h in flat.hashtags or ()] == ["tag"]  # names lose control characters


def test_fetched_at_must_be_aware() -> None:
    with pytest.raises(ValueError, match="timezone-aware") as info:
        flatten(VIDEO, datetime(2023, 8, 4, 12, 0))
    assert not isinstance(info.value, NotAWork)


def test_fetched_at_in_another_zone_is_kept_and_created_at_is_utc() -> None:
    cst = datetime(2023, 8, 4, 20, 0, tzinfo=timezone(timedelta(hours=8)))
    flat = flatten(VIDEO, cst)
    assert flat.work.fetched_at == cst
    assert flat.stats is not None
    assert flat.stats.captured_at == cst
    assert flat.work.created_at is not None
    assert flat.work.created_at.tzinfo is UTC


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"aweme_id": None},
        {"aweme_id": ""},
        {"aweme_id": "abc"},
        {"aweme_id": "12345678901234"},  # 14 digits
        {"aweme_id": "0" * 19},
        {"aweme_id": "99999999999999999999"},  # 20 digits, beyond int64
        {"aweme_id": " 7071967230287744267"},
        {"aweme_id": "７０７１９６７２３０２８７７４４２６７"},  # full-width digits
        {"aweme_id": 7071967230287744000},  # amagi-rounded number, no string twin
        {"aweme_id": True},
        {"aweme_id": 1.5e15},
        {"aweme_id": {"id": AWEME_ID}},
        {"group_id": 7071967230287744267},
    ],
)
def test_no_usable_aweme_id(payload: dict[str, Any]) -> None:
    with pytest.raises(NotAWork):
        flatten(payload, FETCHED)


@pytest.mark.parametrize("payload", [None, [], "7071967230287744267", 7071967230287744267])
def test_not_a_mapping(payload: Any) -> None:
    with pytest.raises(NotAWork):
        flatten(payload, FETCHED)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"aweme_id": 7071967230287744000, "group_id": AWEME_ID}, 7071967230287744267),
        ({"aweme_id": "x", "group_id": AWEME_ID}, 7071967230287744267),
        ({"aweme_id": 123456789012345}, 123456789012345),  # exact: below 2**53
        ({"aweme_id": "9223372036854775807"}, INT64_MAX),
        (
            {"aweme_id": "7253290037918354691", "group_id": "7253008209626156349"},
            7253290037918354691,
        ),
    ],
)
def test_aweme_id_sources(payload: dict[str, Any], expected: int) -> None:
    assert flatten(payload, FETCHED).work.aweme_id == expected


def test_music_never_keys_on_the_numeric_id() -> None:
    only_numeric = flatten(_minimal(music={"id": 7049808807056150000, "title": "t"}), FETCHED)
    assert (only_numeric.music, only_numeric.work.music_id) == (None, None)

    from_mid = flatten(
        _minimal(music={"id": 7049808807056150000, "id_str": "", "mid": "7049808807056149285"}),
        FETCHED,
    )
    assert from_mid.music is not None
    assert from_mid.music.music_id == from_mid.work.music_id == 7049808807056149285


def test_author_without_usable_uid_is_dropped_with_its_reference() -> None:
    flat = flatten(_minimal(author={"uid": 3689586767443357000, "nickname": "n"}), FETCHED)
    assert (flat.author, flat.work.author_uid) == (None, None)
    small = flatten(_minimal(author={"uid": 3689586767443357}), FETCHED)  # int below 2**53
    assert small.work.author_uid == 3689586767443357


@pytest.mark.parametrize(
    ("share_url", "expected"),
    [
        ("https://www.iesdouyin.com/share/video/1/?did=x#frag", "https://www.iesdouyin.com/share/video/1/"),
        ("HTTPS://WWW.IESDOUYIN.COM:443/a?b", "https://www.iesdouyin.com:443/a"),
        ("  https://v.douyin.com/iMNpuGtC/  ", "https://v.douyin.com/iMNpuGtC/"),
        ("", None),
        ("not a url", None),
        ("javascript:alert(1)", None),
        ("https://[::1/x", None),
        ("http://[::1]:8080/x?y", "http://[::1]:8080/x"),
        ("https://host:notaport/x", None),
        (123, None),
    ],
)  # fmt: skip
def test_share_url_is_canonical(share_url: Any, expected: str | None) -> None:
    assert flatten(_minimal(share_url=share_url), FETCHED).work.share_url == expected


@pytest.mark.parametrize(
    ("fields", "kind"),
    [
        ({"aweme_type": 0}, "video"),
        ({"aweme_type": 4}, "video"),
        ({"aweme_type": 55}, "video"),
        ({"aweme_type": 99, "media_type": 4}, "video"),
        ({"aweme_type": 163, "media_type": 4}, "article"),
        ({"aweme_type": 68, "media_type": 2, "images": []}, "other"),
        ({"aweme_type": 68, "images": [None, "x"]}, "other"),
        ({"aweme_type": 0, "media_type": 4, "images": [{"uri": "u"}]}, "image_album"),
        ({"aweme_type": 61}, "other"),
        ({"aweme_type": 68}, None),  # an album's payload without its images: cannot tell
        ({"media_type": 2, "images": None}, None),
        ({}, None),
    ],
)
def test_kind(fields: dict[str, Any], kind: str | None) -> None:
    assert flatten(_minimal(**fields), FETCHED).work.kind == kind


def test_images_skip_non_objects_and_keep_positions_contiguous() -> None:
    images = [None, {"uri": "a", "width": "10", "height": 0, "url_list": ["", 5, "https://x/1"]}]
    flat = flatten(_minimal(images=images, video={"width": 1080, "height": 1920}), FETCHED)
    assert flat.images == (ImageRow(7071967230287744267, 0, "a", 10, None, "https://x/1"),)
    assert (flat.work.kind, flat.work.video_width) == ("image_album", None)


def test_rows_are_frozen() -> None:
    flat = flatten(VIDEO, FETCHED)
    with pytest.raises(dataclasses.FrozenInstanceError):
        flat.work.aweme_id = 1  # type: ignore[misc]


# --- properties over mutated real payloads -------------------------------------------------

ROW_TYPES = (WorkRow, AuthorRow, MusicRow, StatsRow, HashtagRow, MentionRow, ImageRow)
INT32_COLUMNS = {
    "aweme_type", "media_type", "verification_type", "duration_s", "video_width",
    "video_height", "width", "height", "start", "end", "position",
}  # fmt: skip
COUNT_COLUMNS = {
    "digg_count", "comment_count", "share_count", "collect_count", "play_count",
    "admire_count", "follower_count", "following_count", "total_favorited", "duration_ms",
}  # fmt: skip


def _conforms(value: object, hint: Any) -> bool:
    if isinstance(hint, types.UnionType):
        return any(_conforms(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    origin = typing.get_origin(hint) or hint
    return isinstance(value, origin)


def _rows(flat: FlatWork) -> Iterator[Any]:
    yield flat.work
    rows = (flat.author, flat.music, flat.collection, flat.place, flat.stats)
    yield from (r for r in rows if r is not None)
    for children in (flat.hashtags, flat.mentions, flat.images, flat.categories):
        yield from children or ()


def _candidate_ids(detail: Mapping[str, Any]) -> set[int]:
    ids: set[int] = set()
    for value in (detail.get("aweme_id"), detail.get("group_id")):
        if isinstance(value, str) and value.isascii() and value.isdigit():
            ids.add(int(value))
        elif type(value) is int:
            ids.add(value)
    return ids


def check_invariants(flat: FlatWork, detail: Mapping[str, Any]) -> None:
    work = flat.work
    assert 10**14 <= work.aweme_id <= INT64_MAX
    assert work.aweme_id in _candidate_ids(detail)
    assert flat.raw is detail
    assert work.kind in ("video", "image_album", "article", "other", None)
    assert work.author_uid == (flat.author.uid if flat.author else None)
    assert work.music_id == (flat.music.music_id if flat.music else None)
    if work.kind == "image_album":
        assert flat.images
        assert (work.video_width, work.video_height) == (None, None)
    if work.created_at is not None:
        assert work.created_at.tzinfo is UTC
    if work.share_url is not None:
        assert "?" not in work.share_url
        assert "#" not in work.share_url
        assert work.share_url.startswith(("http://", "https://"))
    for children in (flat.hashtags or (), flat.mentions or (), flat.images or ()):
        assert [c.position for c in children] == list(range(len(children)))
        assert all(c.aweme_id == work.aweme_id for c in children)
    assert (flat.hashtags is None) == (flat.mentions is None)  # both come from text_extra
    names = [h.name for h in flat.hashtags or ()]
    assert len(set(names)) == len(names)
    # clean_label's promise: no control character, no U+FFFD, no surrounding white space. Not
    # `isprintable()`: that also refuses format characters (the ZWJ in emoji sequences) and
    # code points this Python's Unicode does not know yet, both kept on purpose.
    assert all(name and name == name.strip() for name in names)
    assert not any(unicodedata.category(c) == "Cc" or c == "\ufffd" for n in names for c in n)
    assert all(m.uid is not None or m.sec_uid is not None for m in flat.mentions or ())
    for row in (*(flat.hashtags or ()), *(flat.mentions or ())):
        if row.start is not None and row.end is not None:
            assert 0 <= row.start <= row.end <= len(work.description or "")
    if flat.stats is not None:
        assert flat.stats.aweme_id == work.aweme_id
    for row in _rows(flat):
        hints = typing.get_type_hints(type(row))
        for field in dataclasses.fields(row):
            value = getattr(row, field.name)
            assert _conforms(value, hints[field.name]), (type(row).__name__, field.name, value)
            if isinstance(value, str):
                assert "\x00" not in value
                value.encode("utf-8")  # no lone surrogates: PostgreSQL must accept it
                if field.name != "description":
                    assert value != ""
            if isinstance(value, int) and field.name in INT32_COLUMNS:
                assert -(2**31) <= value <= INT32_MAX
            if isinstance(value, int) and field.name in COUNT_COLUMNS:
                assert 0 <= value <= INT64_MAX
            if isinstance(value, int) and field.name.endswith(("uid", "_id")):
                assert 0 < value <= INT64_MAX


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    items = node.items() if isinstance(node, dict) else enumerate(node)
    for key, child in items:
        yield (*prefix, key)
        if isinstance(child, dict | list):
            yield from _paths(child, (*prefix, key))


# Every key flatten reads, at any depth: mutations aimed here change the rows; the rest of the
# paths check that unrelated damage is ignored.
READ_KEYS = {
    "aweme_id", "group_id", "author", "music", "statistics", "status", "video", "desc",
    "text_extra", "images", "create_time", "duration", "region", "share_url", "aweme_type",
    "media_type", "uid", "sec_uid", "unique_id", "short_id", "nickname", "signature",
    "avatar_thumb", "avatar_medium", "avatar_larger", "uri", "url_list", "verification_type",
    "custom_verify", "enterprise_verify_reason", "follower_count", "following_count",
    "total_favorited", "id_str", "mid", "title", "album", "is_original", "owner_id",
    "owner_nickname", "cover_thumb", "cover_medium", "cover_hd", "width", "height",
    "digg_count", "comment_count", "share_count", "collect_count", "play_count", "admire_count",
    "is_delete", "is_prohibited", "private_status", "in_reviewing", "allow_share", "type",
    "start", "end", "hashtag_name", "hashtag_id", "user_id",
}  # fmt: skip
ALL_PATHS = {name: sorted(_paths(d), key=repr) for name, d in REAL.items()}
READ_PATHS = {
    name: [p for p in paths if all(isinstance(k, int) or k in READ_KEYS for k in p)]
    for name, paths in ALL_PATHS.items()
}

JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.text(max_size=20),
    st.sampled_from(
        ["", "0", "-1", "1_000", " 12", "１２", "1e5", "\x00", "x\ud83d", AWEME_ID,
         "99999999999999999999", "https://[::1", "https://a.b/c?d#e"]
    ),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=3),
)  # fmt: skip


def _mutate(root: Any, path: tuple[Any, ...], op: str, junk: Any) -> None:
    node = root
    for key in path[:-1]:
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            return  # an earlier mutation removed this branch
    last = path[-1]
    if isinstance(node, dict) or (isinstance(node, list) and isinstance(last, int)):
        try:
            if op == "drop":
                del node[last]
            else:
                node[last] = None if op == "null" else junk
        except (KeyError, IndexError):
            return


def _flatten_or_not_a_work(detail: Any) -> FlatWork | None:
    try:
        return flatten(detail, FETCHED)
    except NotAWork:
        return None


PROPERTY_SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@PROPERTY_SETTINGS
@given(data=st.data(), name=st.sampled_from(sorted(REAL)))
def test_mutated_payloads_never_crash(data: st.DataObject, name: str) -> None:
    detail = copy.deepcopy(REAL[name])
    paths = st.one_of(
        st.sampled_from(READ_PATHS[name]),
        st.sampled_from([p for p in READ_PATHS[name] if len(p) == 1]),
        st.sampled_from([("aweme_id",), ("group_id",)]),
        st.sampled_from(ALL_PATHS[name]),
    )
    mutation = st.tuples(paths, st.sampled_from(["drop", "null", "junk"]), JUNK)
    for path, op, junk in data.draw(st.lists(mutation, min_size=1, max_size=8)):
        _mutate(detail, path, op, junk)
    flat = _flatten_or_not_a_work(detail)
    if flat is not None:
        check_invariants(flat, detail)
        assert flatten(detail, FETCHED) == flat  # deterministic


TEXT_EXTRA_ENTRY = st.one_of(
    JUNK,
    st.dictionaries(
        st.sampled_from(
            ["type", "start", "end", "hashtag_name", "hashtag_id", "user_id", "sec_uid", "new"]
        ),
        st.one_of(JUNK, st.integers(min_value=-1, max_value=6), st.text(max_size=8)),
        max_size=8,
    ),
)
BIG_TEXT = st.tuples(
    st.text(st.sampled_from("😀🧣🛰️#@\n\r\t \x00a中٩(˃̶͈̀௰˂̶͈́)"), min_size=1, max_size=12),
    st.integers(min_value=1, max_value=100_000),
).map(lambda piece_len: (piece_len[0] * piece_len[1])[:100_000])


@PROPERTY_SETTINGS
@given(
    name=st.sampled_from(sorted(REAL)),
    extra=st.lists(st.tuples(st.integers(min_value=0, max_value=10), TEXT_EXTRA_ENTRY), max_size=8),
    desc=st.one_of(st.none(), BIG_TEXT, JUNK),
)
def test_unknown_text_extra_and_huge_descriptions(
    name: str, extra: list[tuple[int, Any]], desc: Any
) -> None:
    detail = copy.deepcopy(REAL[name])
    text_extra = detail.get("text_extra") or []
    for index, entry in extra:
        text_extra.insert(index, entry)
    detail["text_extra"] = text_extra
    detail["desc"] = desc
    flat = flatten(detail, FETCHED)  # the id is intact, so NotAWork is not allowed here
    check_invariants(flat, detail)
    if isinstance(desc, str):
        clean = desc.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")
        assert flat.work.description == clean
    else:
        assert flat.work.description is None  # no caption in this payload: unknown
    # Injected entries may repeat a real tag earlier, but never hide one.
    real_tags = {e["hashtag_name"] for e in REAL[name]["text_extra"]}
    assert real_tags <= {h.name for h in flat.hashtags or ()}


@pytest.mark.parametrize(
    ("extra", "place"),
    [
        ('{"poi_id": "1", "poi_name": "A", "poi_latitude": 1.5}', ("A", 1.5)),
        ('{"poi_id": "1", "poi_name": "A", "poi_latitude": 1e400}', ("A", None)),
        ('{"poi_id": 1' + "0" * 30 + ', "poi_name": "big id"}', None),  # no 64-bit id
        # A place anchor's `extra` is a JSON document inside a string: nested deeper than the
        # standard library can read, it is no place (it used to raise RecursionError).
        ('{"poi_id": "1", "x": ' + "[" * 100_000 + "]" * 100_000 + "}", None),
    ],
)
def test_place_anchor_extra_is_read_like_json_loads(
    extra: str, place: tuple[str, float | None] | None
) -> None:
    payload = _minimal()
    payload["anchor_info"] = {"type": 2, "extra": extra}
    flat = flatten(payload, FETCHED)
    found = None if flat.place is None else (flat.place.name, flat.place.latitude)
    assert found == place


@pytest.mark.parametrize("name", ["tag\x00", "\x00tag\x01\x1b", "t\x00a\ufffdg", "\ud83dtag\x00"])
def test_a_label_reads_the_same_from_the_stored_payload(name: str) -> None:
    # The stored raw payload holds U+FFFD where a NUL was (clean_json); the label a reprocess
    # reads from it must be the label the first load stored (it used to keep the U+FFFD).
    stored = clean_json(name)
    assert "\x00" not in stored
    assert clean_label(stored) == clean_label(name)
    assert "\ufffd" not in clean_label(name)
