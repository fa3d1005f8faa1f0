"""Banks: content hashed with its views into the event store, by CLI and API, enforced as a list.

Real synthetic images written as PNG, a short H.264 clip made with PyAV, a real
SQLite file, the real proxy on 127.0.0.1 and the real StreamGuard (``scan_file``).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import struct
import zlib
from pathlib import Path

import aiohttp
import av
import cv2
import numpy as np
import pytest
from harness import ICE, eventually, serving

from livesafe.banks.media import hash_content
from livesafe.banks.store import BankStore
from livesafe.cli import main
from livesafe.events import MATCH_STARTED
from livesafe.guard.matcher import LiveMatcher
from livesafe.guard.stream_guard import GuardSettings
from livesafe.lists import BlocklistError, ListSpec
from livesafe.lists.live import ListWatcher
from livesafe.lists.sources import SourceContext
from livesafe.moderation.settings import ModerationSettings, Principal
from livesafe.proxy import build_proxy
from livesafe.relay.settings import RelaySettings
from livesafe.scan import scan_file
from livesafe.signals import SIGNALS
from livesafe.signals.pdq import luma_from_rgb
from sample_streams.synthetic import blocked_images, resize

MOD = Principal("mo", "moderator", "m" * 20)
OBSERVER = Principal("ob", "observer", "o" * 20)
PDQ = SIGNALS["pdq"]


def write_png(path: Path, rgb: np.ndarray) -> Path:
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1]))
    return path


def write_clip(path: Path, frames: list[np.ndarray], fps: int = 10) -> Path:
    """An H.264 MP4 of RGB ``frames`` (PyAV)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` greyscale pixels, with one row of data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * (width + 1)))


def centre_crop(rgb: np.ndarray, cut: float) -> np.ndarray:
    """``rgb`` with ``cut`` of its width and height taken off each side, as a player's zoom shows it."""
    h, w = rgb.shape[:2]
    return rgb[round(cut * h) : h - round(cut * h), round(cut * w) : w - round(cut * w)]


def audit_rows(db: Path) -> list[tuple[str, str, str, dict]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT action, actor, role, details FROM audit ORDER BY seq").fetchall()
    return [(a, actor, role, json.loads(d)) for a, actor, role, d in rows]


@pytest.fixture
def pictures(tmp_path: Path) -> dict[str, Path]:
    images = blocked_images()
    two_pictures = [resize(images["rocket"], 320, 180)] * 15 + [resize(images["chelsea"], 320, 180)] * 15
    return {
        "coffee": write_png(tmp_path / "coffee.png", images["coffee"]),
        "chelsea": write_png(tmp_path / "chelsea.png", images["chelsea"]),
        "clip": write_clip(tmp_path / "clip.mp4", two_pictures),  # 3 s: rocket, then chelsea
    }


# ------------------------------------------------------------------ CLI


def test_cli_adds_lists_and_removes_images_and_a_video(
    tmp_path: Path, pictures: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "events.db"
    store = ["--db", str(db)]
    assert main(["bank", "add", "ours", str(pictures["coffee"]), str(pictures["clip"]), *store, "--actor", "ann"]) == 0
    out = capsys.readouterr().out
    assert out.count("bank ours: added") == 2 and "(image, 1 frame(s)" in out and "(video, 4 frame(s)" in out

    assert main(["bank", "list", *store, "--json"]) == 0
    (summary,) = json.loads(capsys.readouterr().out)["banks"]
    assert summary["name"] == "ours" and summary["contents"] == 2 and summary["version"] == 1
    assert main(["bank", "list", "ours", *store, "--json"]) == 0
    contents = {c["kind"]: c for c in json.loads(capsys.readouterr().out)["contents"]}
    image, video = contents["image"], contents["video"]
    assert image["views"] > 100 and image["hashes"] == image["views"]  # pdq only: one hash a view
    assert video["frames"] == 4 and video["views"] > 300 and video["added_by"] == "ann"
    assert image["content_id"] == image["sha256"][:16]

    # Each sampled video frame is in the bank with its time: the rocket at 0 and 1 s, the cut to the cat at
    # 1.5 s, between two samples (a shot shorter than --every is not missed), then the cat at 2 s.
    banks = BankStore(db)
    snapshot = banks.snapshot("ours")
    assert snapshot is not None
    times = {meta.get("frame_time") for _, _, meta in snapshot[1] if meta["content_id"] == video["content_id"]}
    assert times == {"0.000", "1.000", "1.500", "2.000"}
    chelsea = PDQ.hash_luma(luma_from_rgb(resize(blocked_images()["chelsea"], 320, 180))).variants[0]
    at_cut = [PDQ.parse_hex(h) for _, h, m in snapshot[1] if m.get("frame_time") == "1.500" and m["view"] == "full"]
    assert int(np.unpackbits(at_cut[0] ^ chelsea).sum()) <= 16
    banks.close()

    assert main(["bank", "remove", "ours", image["content_id"], *store, "--actor", "ann", "--reason", "wrong"]) == 0
    assert capsys.readouterr().out == f"bank ours: removed {image['content_id']} ({image['hashes']} hashes)\n"
    assert main(["bank", "list", "ours", *store, "--json"]) == 0
    assert [c["kind"] for c in json.loads(capsys.readouterr().out)["contents"]] == ["video"]
    assert main(["bank", "remove", "ours", image["content_id"], *store]) == 2
    assert "holds no content" in capsys.readouterr().err

    audit = audit_rows(db)
    assert [(a, actor, role) for a, actor, role, _ in audit] == [
        ("bank.add", "ann", "operator"),
        ("bank.add", "ann", "operator"),
        ("bank.remove", "ann", "operator"),
    ]
    assert audit[2][3]["content_id"] == image["content_id"] and audit[2][3]["bank"] == "ours"


def test_cli_refuses_bad_files_and_banks_none_of_a_batch_with_one(
    tmp_path: Path, pictures: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "events.db"
    store = ["--db", str(db)]
    text = tmp_path / "notes.png"
    text.write_text("not a picture\n")
    flat = write_png(tmp_path / "grey.png", np.full((200, 300, 3), 128, np.uint8))
    huge = tmp_path / "huge.png"
    huge.write_bytes(png_header(12_000, 10_000))  # 120 megapixels declared in a few bytes
    truncated = tmp_path / "cut.mp4"
    truncated.write_bytes(pictures["clip"].read_bytes()[:300])
    cases = [
        ([str(pictures["coffee"]), str(text)], "notes.png: cannot open as video"),
        ([str(tmp_path / "missing.png")], "missing.png: no such file"),
        ([str(tmp_path)], "is a directory"),
        ([str(flat)], "grey.png: too flat to hash"),
        ([str(truncated)], "cut.mp4"),
        ([str(huge)], "huge.png: 12000x10000 pixels, over the limit of 100,000,000"),
        ([str(pictures["coffee"]), "--max-bytes", "1000"], "over the limit of 1,000"),
        ([str(pictures["coffee"]), str(pictures["chelsea"]), "--id", "one"], "--id names one content"),
        ([str(pictures["coffee"]), "--id", "no spaces"], "content id 'no spaces'"),
    ]
    for files, message in cases:
        assert main(["bank", "add", "ours", *files, *store]) == 2, message
        err = capsys.readouterr().err
        assert err.startswith("livesafe: error: ") and message in err and "Traceback" not in err, err
    assert main(["bank", "add", "bad name!", str(pictures["coffee"]), *store]) == 2
    assert "bank name" in capsys.readouterr().err
    assert main(["bank", "list", *store, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["banks"] == []  # not even the good file of the first batch
    assert main(["bank", "add", "ours", str(pictures["coffee"]), *store]) == 0
    assert main(["bank", "add", "ours", str(pictures["coffee"]), *store, "--id", "again"]) == 2
    assert "this file is banked already" in capsys.readouterr().err
    assert audit_rows(db)[-1][0] == "bank.add" and len(audit_rows(db)) == 1


def test_the_store_keeps_hashes_and_metadata_never_pixels(tmp_path: Path, pictures: dict[str, Path]) -> None:
    db = tmp_path / "store" / "events.db"
    assert main(["bank", "add", "ours", str(pictures["coffee"]), str(pictures["clip"]), "--db", str(db)]) == 0
    assert main(["bank", "add", "ours", str(pictures["chelsea"]), "--db", str(db), "--signal", "phash"]) == 0
    assert sorted(p.name for p in db.parent.iterdir()) <= ["events.db", "events.db-shm", "events.db-wal"]
    with sqlite3.connect(db) as conn:
        tables = [name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        bank_tables = [t for t in tables if t.startswith("bank")]
        assert sorted(bank_tables) == ["bank_contents", "bank_hashes", "banks"]
        hashes = 0
        for table in bank_tables:
            for row in conn.execute(f"SELECT * FROM {table}"):  # noqa: S608 - names from sqlite_master
                for value in row:
                    assert value is None or isinstance(value, int | float | str), (table, type(value))
                    assert not isinstance(value, str) or len(value) <= 64, (table, value[:80])
            hashes += table == "bank_hashes"
        columns = {c[1] for c in conn.execute("PRAGMA table_info(bank_hashes)")}
        assert columns == {"bank", "content_id", "signal", "hash", "view", "frame_time", "quality"}
        signals = {s for (s,) in conn.execute("SELECT DISTINCT signal FROM bank_hashes")}
        assert signals == {"pdq", "phash"}
        (total,) = conn.execute("SELECT COUNT(*) FROM bank_hashes").fetchone()
    # About 130 views of each picture and sampled frame: a hash each (two for the picture hashed twice).
    assert 600 < total < 1200
    # The file holds hashes: far less than one copy of the pictures' pixels would take.
    pixels = sum(cv2.imread(str(pictures[n])).size for n in ("coffee", "chelsea"))
    assert db.stat().st_size + sum(p.stat().st_size for p in db.parent.glob("*-wal")) < pixels / 2


# ------------------------------------------------------------------ the list source


def test_a_bank_source_picks_up_adds_and_removes_at_the_next_poll(tmp_path: Path, pictures: dict[str, Path]) -> None:
    db = tmp_path / "events.db"
    banks = BankStore(db)
    spec = ListSpec(kind="bank", name="ours", action="slate", category="ncii")
    with pytest.raises(BlocklistError, match="no bank 'ours'"):
        LiveMatcher([spec], context=SourceContext(banks=banks))  # a misspelt bank stops the start
    coffee = hash_content(pictures["coffee"].read_bytes(), "coffee", [PDQ])
    banks.add("ours", [("coffee", coffee)], "test")
    lists = LiveMatcher([spec], context=SourceContext(banks=banks), reload_seconds=0.05)
    first = lists.current.blocklists[0]
    assert len(first) == len(coffee.hashes) and first.version == "ours@1"
    assert {m["content_id"] for m in first.metadata["pdq"]} == {"coffee"}
    assert lists.reload_if_changed() == []  # unchanged version: nothing rebuilt

    watcher = ListWatcher(lists, 0.05).start()
    try:
        other = BankStore(db)  # another connection to the file: the CLI, the API of another process
        chelsea = hash_content(pictures["chelsea"].read_bytes(), "chelsea", [PDQ])
        other.add("ours", [("chelsea", chelsea)], "test")
        assert eventually(lambda: len(lists.current.blocklists[0]) == len(coffee.hashes) + len(chelsea.hashes))
        assert other.remove("ours", "coffee") is not None
        assert eventually(lambda: lists.current.blocklists[0].version == "ours@3")
        assert {m["content_id"] for m in lists.current.blocklists[0].metadata["pdq"]} == {"chelsea"}
        other.close()
    finally:
        watcher.stop()
    assert lists.status()[0]["kind"] == "bank" and lists.status()[0]["last_error"] is None
    banks.close()


def test_a_bank_source_needs_the_event_stores_banks() -> None:
    with pytest.raises(ValueError, match="reads the event store's banks"):
        LiveMatcher([ListSpec(kind="bank", name="ours")])
    with pytest.raises(ValueError, match="no option 'path_env'"):
        LiveMatcher([ListSpec(kind="bank", name="ours", options={"path_env": "X"})], context=SourceContext())


# ------------------------------------------------------------------ a crop a list cannot match


def test_a_cropped_view_of_a_banked_picture_matches_where_the_original_hash_does_not(tmp_path: Path) -> None:
    picture = blocked_images()["chelsea"]
    shown = resize(centre_crop(picture, 0.10), 640, 360)  # a zoom: 10 % off each side, filling the frame
    clip = write_clip(tmp_path / "zoomed.mp4", [shown] * 12)

    original = tmp_path / "original.txt"
    original.write_text(f"pdq {PDQ.format_hex(PDQ.hash_luma(luma_from_rgb(picture)).variants[0])}\n")
    listed = LiveMatcher([ListSpec(path=original, name="hash-list")])
    assert not scan_file(clip, lambda: listed.current, GuardSettings()).matched

    banks = BankStore(tmp_path / "events.db")
    banks.add("ours", [("cat-1", hash_content(write_png(tmp_path / "c.png", picture).read_bytes(), "c", [PDQ]))], "t")
    banked = LiveMatcher([ListSpec(kind="bank", name="ours", action="slate")], context=SourceContext(banks=banks))
    result = scan_file(clip, lambda: banked.current, GuardSettings())
    (started,) = [e for e in result.events if e.type == MATCH_STARTED]
    entry = started.details["metadata"]
    assert started.list_name == "ours" and started.action == "slate" and started.distance <= 31
    assert entry["bank"] == "ours" and entry["content_id"] == "cat-1" and entry["view"].startswith("crop:")
    assert result.frames_slated == result.frames  # from its first frame: it is all the clip shows
    banks.close()


def test_a_bank_in_the_config_is_what_livesafe_scan_enforces(
    tmp_path: Path, pictures: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "livesafe.toml"
    config.write_text(
        '[moderation]\ndatabase = "events.db"\n\n'
        '[[lists.source]]\nkind = "bank"\nname = "ours"\ncategory = "ncii"\naction = "slate"\n'
    )
    clip = write_clip(tmp_path / "zoomed.mp4", [resize(centre_crop(blocked_images()["chelsea"], 0.1), 640, 360)] * 12)
    assert main(["scan", str(clip), "--config", str(config)]) == 2
    assert "bank:ours: no bank 'ours' (livesafe bank add ours FILE makes one)" in capsys.readouterr().err
    assert main(["bank", "add", "ours", str(pictures["chelsea"]), "--config", str(config), "--id", "cat"]) == 0
    assert (tmp_path / "events.db").is_file()  # the config's store, beside the config
    assert main(["scan", str(clip), "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert "1 interruption(s)" in out and ": ours (ncii) pdq" in out and "-> slate" in out


# ------------------------------------------------------------------ the HTTP API


def _form(*files: tuple[str, bytes], **fields: str) -> aiohttp.FormData:
    form = aiohttp.FormData()
    for name, data in files:
        form.add_field("file", data, filename=name, content_type="application/octet-stream")
    for key, value in fields.items():
        form.add_field(key, value)
    return form


async def test_api_moderators_add_and_remove_observers_read_every_change_audited(
    tmp_path: Path, pictures: dict[str, Path]
) -> None:
    db = tmp_path / "events.db"
    banks = BankStore(db)
    banks.add("ours", [("seed", hash_content(pictures["chelsea"].read_bytes(), "seed", [PDQ]))], "test")
    lists = LiveMatcher([ListSpec(kind="bank", name="ours")], context=SourceContext(banks=banks))
    settings = ModerationSettings(database=str(db), tokens=(MOD, OBSERVER), bank_max_upload_bytes=2_000_000)
    proxy = build_proxy(
        RelaySettings(ice=ICE), lambda: lists.current, GuardSettings(), settings, ListWatcher(lists, 0.05),
        lists=lists, banks=banks,
    )  # fmt: skip
    coffee = pictures["coffee"].read_bytes()
    mod, obs = {"Authorization": f"Bearer {MOD.token}"}, {"Authorization": f"Bearer {OBSERVER.token}"}
    async with serving(proxy.app) as base, aiohttp.ClientSession() as http:
        url = f"{base}/api/banks/ours/contents"
        async with http.post(url, data=_form(("c.png", coffee), reason="test")) as r:
            assert r.status == 401
        async with http.post(url, data=_form(("c.png", coffee), reason="test"), headers=obs) as r:
            assert r.status == 403 and "moderator only" in await r.text()
        async with http.post(url, data=_form(("c.png", coffee)), headers=mod) as r:
            assert r.status == 400 and "reason" in await r.text()
        async with http.post(url, data=_form(("notes.txt", b"hello"), reason="x"), headers=mod) as r:
            assert r.status == 422 and "file 1 (notes.txt): cannot open as video" in await r.text()
        async with http.post(url, data=_form(("big.bin", b"\0" * 2_000_001), reason="x"), headers=mod) as r:
            assert r.status == 413 and "at most 2,000,000 bytes" in await r.text()
        async with http.post(url, json={"reason": "x"}, headers=mod) as r:
            assert r.status == 415

        form = _form(("c.png", coffee), reason="reported", content_id="case-7")
        async with http.post(url, data=form, headers=mod) as r:
            assert r.status == 201, await r.text()
            added = await r.json()
        (content,) = added["added"]
        assert content["content_id"] == "case-7" and content["added_by"] == "mo" and content["kind"] == "image"
        assert added["audit"][0]["action"] == "bank.add" and added["audit"][0]["role"] == "moderator"
        async with http.post(url, data=_form(("c.png", coffee), reason="again"), headers=mod) as r:
            assert r.status == 409 and "banked already" in await r.text()

        async with http.get(f"{base}/api/banks", headers=obs) as r:
            (summary,) = (await r.json())["banks"]
        assert summary["name"] == "ours" and summary["contents"] == 2
        async with http.get(f"{base}/api/banks/ours", headers=obs) as r:
            assert [c["content_id"] for c in (await r.json())["contents"]] == ["seed", "case-7"]
        async with http.get(f"{base}/api/banks/nope", headers=obs) as r:
            assert r.status == 404

        # The list in force follows: the added content is what a lookup of its hash names.
        full = next(h for h, _ in hash_content(coffee, "c", [PDQ]).hashes if h.view == "full")
        lookup = f"{base}/api/lookup?signal_type=pdq&signal={full.hash}"
        found = {}
        for _ in range(200):
            async with http.get(lookup, headers=obs) as r:
                found = await r.json()
            if found:
                break
            await asyncio.sleep(0.05)
        (match,) = [m for m in found["ours"] if m["distance_bits"] == 0]
        assert match["bank_content_id"] == "case-7" and match["metadata"]["view"] == "full"

        remove = f"{url}/case-7?reason=not%20ours"
        async with http.delete(remove, headers=obs) as r:
            assert r.status == 403
        async with http.delete(f"{url}/case-7", headers=mod) as r:
            assert r.status == 400
        async with http.delete(remove, headers=mod) as r:
            assert r.status == 200 and (await r.json())["removed"]["content_id"] == "case-7"
        async with http.delete(remove, headers=mod) as r:
            assert r.status == 404

        async with http.get(f"{base}/api/audit", headers=obs) as r:
            entries = (await r.json())["entries"]
    assert [(e["action"], e["actor"], e["reason"], e["details"]["content_id"]) for e in entries] == [
        ("bank.add", "mo", "reported", "case-7"),
        ("bank.remove", "mo", "not ours", "case-7"),
    ]
    assert [c.content_id for c in banks.contents("ours") or []] == ["seed"]
    banks.close()
