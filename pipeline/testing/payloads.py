"""Deterministic `aweme_detail` payloads built from the real fixtures in `data/` (pure, no clock).

Every work is one of three real templates (video detail, album post-list item, video post-list
item) chosen by a hash of (seed, id), with its ids, author, music, text, images and counts
swapped. Ids and long texts are substituted in the template's JSON text in one regex pass, so
every place the real body repeats them (share URLs, `statistics.aweme_id`, `comment_gid`,
`search_impr`, `url_key`, ...) stays consistent, and the key set is the template's own.

`text_extra` `start`/`end` count UTF-16 code units, as Douyin's do (UPSTREAM.md §3: `#日落🌄`
is start 0, end 5), and some generated text has emoji outside the Basic Multilingual Plane, so
code points and UTF-16 units differ where it matters.

Collections (`mix_info`), places (a place `anchor_info`) and categories (`video_tag`) are
varied too, in the real album item's shapes, so every work has a category path, about a third
of an author's works are episodes of the author's collection, and a quarter are tagged with one
of a few places.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import re
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache
from importlib import resources
from typing import Any

MIN_CREATE_TIME = 1546300800  # 2019-01-01T00:00:00Z
MAX_CREATE_TIME = 1767225599  # 2025-12-31T23:59:59Z
AUTHOR_POOL = 200  # distinct authors per seed, so authors repeat across a batch of ~1,000 works
MUSIC_POOL = 60
HOUR = 3600.0

ALBUM, VIDEO_DETAIL, VIDEO_POST = "album", "video_detail", "video_post"
_FILES = {
    VIDEO_DETAIL: "video_detail_7071967230287744267.json",
    ALBUM: "album_postlist_7232626237586312485.json",
    VIDEO_POST: "video_postlist_7253290037918354691.json",
}
DELETED_FILE = "deleted_filter_detail_7223326284024139065.json"

# Seven hashtags (name, id) are the real ones from the fixtures; the rest follow their shape.
HASHTAGS: tuple[tuple[str, str], ...] = (
    ("ootd穿搭", "1645837370349579"), ("氛围感", "1640936621124619"),
    ("女友穿搭", "1621254417954830"), ("辣妹穿搭", "1661587378647047"),
    ("生活碎片", "1605855447219300"), ("电影冰雪狙击2", "1770183396544590"),
    ("冰雪狙击2老戏骨飙戏", "1770821731138571"), ("美食", "1578523457312782"),
    ("旅行✈", "1582736519283746"), ("日常vlog", "1590012345678901"),
    ("夏日☀", "1601122334455667"), ("咖啡☕日常", "1612233445566778"),
    ("✨闪闪发光", "1623344556677889"), ("萌宠", "1574736491827364"),
    ("猫咪", "1575847502938475"), ("健身打卡", "1634455667788990"),
    ("搞笑", "1568293746582910"), ("音乐", "1569304857693021"),
    ("舞蹈", "1570415968704132"), ("vlog", "1645566778899001"),
    ("dou上热门", "1656677889900112"), ("城市夜景", "1667788990011223"),
    ("读书", "1678899001122334"), ("手工DIY", "1689900112233445"),
    ("日落🌄", "1691234567890123"), ("海边🏖️", "1692345678901234"),
    ("摄影", "1571526079815243"), ("汽车", "1572637180926354"),
    ("游戏", "1573748291037465"), ("家常菜", "1690011223344556"),
    ("❤爱心传递", "1701122334455667"), ("国风", "1712233445566778"),
)  # fmt: skip
_SENTENCES = (
    "其实早就和你表白过了 在看你的每个眼神里",
    "今天的晚霞好美☀",
    "辣妹统治世界٩(˃̶͈̀௰˂̶͈́)و。",
    "第一次做这道菜，居然成功了！",
    "周末去哪儿？\n带你逛遍老城区",
    "这只猫也太会撒娇了吧❤",
    "坚持健身第100天✨",
    "飞行员跳伞进山寨，哪知道白捡了个寨主当",
    "雨天适合听歌☕",
    "你们要的教程来啦～\n第一步：准备材料\n第二步：跟着做",
    "城市的夜，安静又热闹",
    "一个人的旅行✈",
    "日落🌄的时候最温柔",
    "海边的风🌊🌊",
)
_NICKNAMES = (
    "百里TUFU", "燃剪Kevin", "小鹿乱撞", "☀阳光少年", "吃货日记", "旅行的猫",
    "阿飞Official", "夏天的风", "一只柠檬精", "摄影师老王", "米粒儿❤", "程序员小张",
)  # fmt: skip
_SONGS = (
    "BABYDOLL (新版)",
    "碑海北的浪漫bgm",
    "晴天",
    "夜曲",
    "稻香",
    "起风了",
    "Lemon",
    "海阔天空",
)
_ARTISTS = ("星野新一", "碑海北", "周杰伦", "买辣椒也用券", "米津玄师", "Beyond")
_IMAGE_SIZES = ((1440, 1918), (1440, 1920), (1080, 1440), (1080, 1920), (1280, 1280))


# Real category paths from the fixtures' `video_tag` (id, name) by level; the last two follow
# the same numbering.
_CATEGORY_PATHS: tuple[tuple[tuple[int, str], ...], ...] = (
    ((2003, "时尚"), (2003007, "穿搭"), (2003007011, "女装")),
    ((2019, "影视"), (2019001, "影视剪辑"), (2019001001, "电视剧剪辑")),
    ((2006, "颜值"), (2006002, "美女")),
    ((2011, "美食"), (2011003, "美食教程")),
    ((2014, "旅行"), (2014002, "城市风光"), (2014002001, "夜景")),
)
# (poi_id, name, province, city, latitude, longitude); the first is the fixture's.
_PLACES = (
    ("6601123594271459336", "武汉市", "湖北省", "武汉市", 30.59573, 114.298972),
    ("6601125112283906063", "西湖", "浙江省", "杭州市", 30.243, 120.150),
    ("6601136811124311047", "外滩", "上海市", "上海市", 31.240, 121.490),
    ("6601125374712924174", "宽窄巷子", "四川省", "成都市", 30.664, 104.054),
)
COLLECTION_BASE_ID = 7238089454588528701  # the fixture's mix_id; an author's is base + index
COLLECTION_EPISODES = 9


def utf16_len(text: str) -> int:
    """Length in UTF-16 code units: what `text_extra` offsets count."""
    return len(text.encode("utf-16-le")) // 2


def hash64(seed: int, *parts: object) -> int:
    """A stable 64-bit hash (blake2b), the same in every process and on every platform."""
    text = ":".join(str(p) for p in (seed, *parts)).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


def make_aweme_id(create_time: int, seq: int) -> int:
    """An id the way Douyin builds them: `create_time` (2019–2025) in the top 32 bits."""
    if not MIN_CREATE_TIME <= create_time <= MAX_CREATE_TIME:
        raise ValueError(f"create_time {create_time} outside 2019–2025")
    if not 0 <= seq < 2**32:
        raise ValueError("seq must fit in 32 bits")
    return (create_time << 32) | seq


def sample_aweme_ids(n: int, *, seed: int) -> list[int]:
    """`n` distinct, deterministic ids with create_time spread over 2019–2025."""
    span = MAX_CREATE_TIME - MIN_CREATE_TIME + 1
    ids = [
        make_aweme_id(MIN_CREATE_TIME + hash64(seed, "ct", i) % span, hash64(seed, "seq", i) >> 32)
        for i in range(n)
    ]
    if len(set(ids)) != n:  # a 1-in-2^80 collision; fail loudly rather than return fewer
        raise RuntimeError("id collision")
    return ids


def counts_at(aweme_id: int, sim_t: float, *, seed: int) -> dict[str, int]:
    """Statistics at simulated time `sim_t` (seconds since the fake started; < 0 counts as 0).

    Rule, with h(x) = `hash64(seed, aweme_id, x)` and `hours = floor(max(sim_t, 0) / 3600)`:
    base counts are digg = h("digg") % 200_000, comment = h("comment") % 8_000,
    share = h("share") % 5_000, collect = h("collect") % 4_000, admire = h("admire") % 3.
    A work is frozen (counts never change) when h("frozen") % 3 == 0. Otherwise each hour adds
    digg += 1 + h("rd") % 50, comment += h("rc") % 5, share += h("rs") % 3, collect += h("rl") % 4.
    So fetches in the same simulated hour agree, and each new hour raises digg_count by >= 1.
    `play_count` is always 0, as on the real web API.
    """

    def h(salt: str) -> int:
        return hash64(seed, aweme_id, salt)

    hours = int(max(sim_t, 0.0) // HOUR) if h("frozen") % 3 else 0
    return {
        "admire_count": h("admire") % 3,
        "collect_count": h("collect") % 4_000 + hours * (h("rl") % 4),
        "comment_count": h("comment") % 8_000 + hours * (h("rc") % 5),
        "digg_count": h("digg") % 200_000 + hours * (1 + h("rd") % 50),
        "play_count": 0,
        "share_count": h("share") % 5_000 + hours * (h("rs") % 3),
    }


def is_frozen(aweme_id: int, *, seed: int) -> bool:
    """True when `counts_at` never changes for this work."""
    return hash64(seed, aweme_id, "frozen") % 3 == 0


def template_kind(aweme_id: int, *, seed: int) -> str:
    """Which real template a work is built from: 30% album, 40% video detail, 30% video post."""
    bucket = hash64(seed, aweme_id, "template") % 10
    return ALBUM if bucket < 3 else VIDEO_DETAIL if bucket < 7 else VIDEO_POST


def author_for(index: int, *, seed: int) -> dict[str, str]:
    """Author `index` of the pool: uid (11–16 digits), sec_uid, nickname, unique_id (maybe "")."""
    h = hash64(seed, "author", index)
    digits = 11 + h % 6
    uid = str(10 ** (digits - 1) + (h >> 8) % (9 * 10 ** (digits - 1)))
    secret = hashlib.blake2b(f"{seed}:sec:{uid}".encode(), digest_size=32).digest()
    sec_uid = "MS4wLjABAAAA" + base64.urlsafe_b64encode(secret).decode()[:43]
    base = _NICKNAMES[index % len(_NICKNAMES)]
    nickname = base if index < len(_NICKNAMES) else f"{base}{index // len(_NICKNAMES)}"
    unique_id = "" if h % 3 == 0 else f"dy{h % 16**8:08x}"
    return {"uid": uid, "sec_uid": sec_uid, "nickname": nickname, "unique_id": unique_id}


def music_for(index: int, *, seed: int, author_pool: int = AUTHOR_POOL) -> dict[str, Any]:
    """Music `index` of the pool; a third are an author's original sound, the rest licensed."""
    h = hash64(seed, "music", index)
    span = MAX_CREATE_TIME - MIN_CREATE_TIME
    music_id = make_aweme_id(MIN_CREATE_TIME + h % span, (h >> 16) % 2**32)
    if index % 3 == 0:
        owner = author_for(h % author_pool, seed=seed)
        title, artist = f"@{owner['nickname']}创作的原声", owner["nickname"]
        owned: tuple[str | None, str, str | None] = (owner["uid"], artist, owner["sec_uid"])
    else:
        title, artist = _SONGS[h % len(_SONGS)], _ARTISTS[(h >> 4) % len(_ARTISTS)]
        owned = (None, "", None)
    return {
        "id": music_id, "id_str": str(music_id), "title": title, "author": artist,
        "duration": 15 + h % 76, "owner_id": owned[0], "owner_nickname": owned[1],
        "sec_uid": owned[2], "is_original_sound": index % 3 == 0, "is_pgc": index % 3 != 0,
    }  # fmt: skip


@cache
def load_fixture(name: str) -> str:
    """The text of one bundled real fixture (copied byte-for-byte from the shared fixtures)."""
    return resources.files("pipeline.testing").joinpath("data", name).read_text("utf-8")


def _escaped(text: str) -> str:
    """`text` as it appears inside a JSON string literal in our compact dumps."""
    return json.dumps(text, ensure_ascii=False)[1:-1]


def _share_text(desc: str) -> str:
    """How Douyin writes a desc into `share_link_desc` ("#tag" → "# tag", whitespace collapsed)."""
    return " ".join(desc.replace("#", "# ").split())


@cache
def _template(kind: str) -> tuple[dict[str, Any], str]:
    doc = json.loads(load_fixture(_FILES[kind]))
    item: dict[str, Any] = doc["aweme_detail"] if kind == VIDEO_DETAIL else doc["aweme_list"][0]
    return item, json.dumps(item, ensure_ascii=False, separators=(",", ":"))


def _substitute(text: str, mapping: dict[str, str]) -> str:
    pattern = re.compile("|".join(re.escape(k) for k in sorted(mapping, key=len, reverse=True)))
    return pattern.sub(lambda m: mapping[m.group(0)], text)


def _compose_desc(rng: random.Random, seed: int, author_pool: int) -> tuple[str, list[Any]]:
    """A desc with 0–2 @mentions and 0–5 hashtags, and `text_extra` spans that index into it."""
    desc = rng.choice(_SENTENCES)
    extras: list[dict[str, Any]] = []
    if rng.random() < 0.15:
        # A search-keyword span (type 5) that clients must ignore. No real sample is bundled;
        # `search_text` is from memory of live data (unverified), the rest is the common shape.
        extras.append({"start": 0, "end": 2, "type": 5, "search_text": desc[:2]})
    for index in rng.sample(range(author_pool), rng.choice((0, 0, 0, 1, 2))):
        who = author_for(index, seed=seed)
        token = "@" + who["nickname"]
        start = utf16_len(desc) + 1
        desc += " " + token
        extras.append(
            {"start": start, "end": start + utf16_len(token), "type": 0, "user_id": who["uid"],
             "sec_uid": who["sec_uid"], "is_commerce": False}
        )  # fmt: skip
    for i, (name, tag_id) in enumerate(rng.sample(HASHTAGS, rng.randint(0, 5))):
        desc += " " if i == 0 else rng.choice((" ", "  ", ""))
        token = "#" + name
        start = utf16_len(desc)
        extras.append(
            {"start": start, "end": start + utf16_len(token), "type": 1, "hashtag_name": name,
             "hashtag_id": tag_id, "is_commerce": False}
        )  # fmt: skip
        desc += token
    return desc, extras


def _images(rng: random.Random, template: list[dict[str, Any]]) -> list[dict[str, Any]]:
    images = []
    for i in range(rng.randint(1, 9)):
        real = template[i % len(template)]
        folder = real["uri"].split("/")[0]
        uri = f"{folder}/{rng.getrandbits(128):032x}"
        width, height = rng.choice(_IMAGE_SIZES)
        entry = json.loads(json.dumps(real).replace(real["uri"], uri))
        entry.update(uri=uri, width=width, height=height)
        images.append(entry)
    return images


def make_aweme_detail(
    aweme_id: int, *, seed: int, sim_t: float, author_pool: int = AUTHOR_POOL
) -> dict[str, Any]:
    """The `aweme_detail` of one work: same (id, seed, simulated hour) → same dict.

    Varied: aweme_id/group_id (= id), create_time (= id >> 32), share URLs, author (from a pool
    of `author_pool`; `unique_id` is always present, "" for a third of authors), music (pool of
    60, 10% null), desc + text_extra (`[]`, or null for a quarter of the empty ones), duration,
    video/cover uris, album images (1–9, cycled from the real three), statistics (`counts_at`).
    """
    kind = template_kind(aweme_id, seed=seed)
    item, text = _template(kind)
    rng = random.Random(hash64(seed, aweme_id, "detail"))
    author_index = rng.randrange(author_pool)
    author = author_for(author_index, seed=seed)
    music = None if rng.random() < 0.1 else music_for(rng.randrange(MUSIC_POOL), seed=seed)
    desc, extras = _compose_desc(rng, seed, author_pool)
    mapping = {
        _escaped(_share_text(item["desc"])): _escaped(_share_text(desc)),
        _escaped(item["desc"]): _escaped(desc),
        item["aweme_id"]: str(aweme_id),
        item["group_id"]: str(aweme_id),
        item["author"]["uid"]: author["uid"],
        item["author"]["nickname"]: author["nickname"],
        item["music"]["id_str"]: str(music["id"] if music else aweme_id),
    }
    if kind != ALBUM:  # an album's video.play_addr is its background music, left as is
        play_uri = item["video"]["play_addr"]["uri"]
        mapping[play_uri] = (
            play_uri[:12] + base64.b32encode(rng.randbytes(15)).decode().lower()[:20]
        )
        cover_uri = item["video"]["cover"]["uri"]
        mapping[cover_uri] = cover_uri.split("/")[0] + f"/{rng.getrandbits(128):032x}"
    detail: dict[str, Any] = json.loads(_substitute(text, mapping))

    detail["create_time"] = aweme_id >> 32
    detail["author"].update(sec_uid=author["sec_uid"], unique_id=author["unique_id"])
    if music is None:
        detail["music"] = None
    else:
        detail["music"].update({k: v for k, v in music.items() if k in detail["music"]})
    detail["text_extra"] = extras if extras or rng.random() < 0.75 else None
    if kind == ALBUM:
        detail["images"] = _images(rng, item["images"])
    else:
        detail["duration"] = detail["video"]["duration"] = 5_000 + rng.randrange(175_000)
    _set_context(detail, aweme_id, author_index, seed=seed)
    stats = detail["statistics"]
    stats.update({k: v for k, v in counts_at(aweme_id, sim_t, seed=seed).items() if k in stats})
    return detail


def _set_context(detail: dict[str, Any], aweme_id: int, author_index: int, *, seed: int) -> None:
    """Category path, collection and place, in the shapes of the real album item."""
    album, _ = _template(ALBUM)
    h = hash64(seed, aweme_id, "context")
    path = _CATEGORY_PATHS[h % len(_CATEGORY_PATHS)]
    detail["video_tag"] = [
        {"tag_id": tag_id, "tag_name": name, "level": level}
        for level, (tag_id, name) in enumerate(path, start=1)
    ]
    detail.pop("mix_info", None)
    if hash64(seed, "collection", author_index) % 2 == 0 and (h >> 8) % 3 == 0:
        mix = json.loads(json.dumps(album["mix_info"]))
        mix["mix_id"] = str(COLLECTION_BASE_ID + author_index)
        mix["mix_name"] = f"{detail['author']['nickname']}的合集"
        mix["statis"].update(
            current_episode=1 + (h >> 16) % COLLECTION_EPISODES,
            updated_to_episode=COLLECTION_EPISODES,
        )
        detail["mix_info"] = mix
    detail.pop("anchor_info", None)
    if (h >> 24) % 4 == 0:
        poi_id, name, province, city, lat, lon = _PLACES[(h >> 32) % len(_PLACES)]
        anchor = json.loads(json.dumps(album["anchor_info"]))
        extra = json.loads(anchor["extra"])
        extra.update(poi_id=poi_id, poi_name=name, poi_latitude=lat, poi_longitude=lon)
        extra["address_info"].update(province=province, city=city, simple_addr=city)
        anchor.update(id=poi_id, extra=json.dumps(extra, ensure_ascii=False))
        detail["anchor_info"] = anchor


def make_detail_data(
    aweme_id: int, *, seed: int, sim_t: float, author_pool: int = AUTHOR_POOL
) -> dict[str, Any]:
    """The raw Douyin detail body: `{aweme_detail, log_pb, status_code: 0}`."""
    detail = make_aweme_detail(aweme_id, seed=seed, sim_t=sim_t, author_pool=author_pool)
    return {"aweme_detail": detail, "log_pb": log_pb(aweme_id, seed=seed), "status_code": 0}


def log_pb(aweme_id: int, *, seed: int) -> dict[str, str]:
    """`{"impr_id": ...}` in the real shape: a UTC timestamp then 20 hex digits."""
    stamp = datetime.fromtimestamp(aweme_id >> 32, UTC).strftime("%Y%m%d%H%M%S")
    return {"impr_id": f"{stamp}{hash64(seed, aweme_id, 'impr') % 16**20:020X}"}


def make_deleted_data(aweme_id: int) -> dict[str, Any]:
    """The real deleted-work body (`aweme_detail: null` + `filter_detail`) for `aweme_id`."""
    doc: dict[str, Any] = json.loads(load_fixture(DELETED_FILE))
    doc["filter_detail"]["aweme_id"] = str(aweme_id)
    return doc


def js_number_view(value: Any) -> Any:
    """`value` after a JavaScript round trip, as amagi serves it: int64s rounded to doubles.

    JS prints the shortest decimal that round-trips, so 7049808807056149285 becomes
    7049808807056150000 (not the double's exact value 7049808807056149504).
    """
    if isinstance(value, dict):
        return {k: js_number_view(v) for k, v in value.items()}
    if isinstance(value, list):
        return [js_number_view(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**53:
        # repr() is the shortest round-trip decimal, e.g. '7.04980880705615e+18'.
        return int(Decimal(repr(float(value))))
    return value
