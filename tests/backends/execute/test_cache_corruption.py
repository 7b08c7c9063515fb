"""Damaged cache entries on disk (flipped bytes, truncation, garbage, an entry copied under another
key) are detected by their checksum, recomputed, and the report is identical."""
import shutil
from pathlib import Path

from support import ROOT as REPO
from interpgram.backends.execute.cache import ResultCache
from interpgram.backends.pipeline import render
from support.reports import report_core

DEMO = REPO / "specs" / "shapes" / "demo.yaml"


def flip_middle(b: bytes) -> bytes:
    i = len(b) // 2
    return b[:i] + bytes([b[i] ^ 0x10]) + b[i + 1:]


def flip_digest(b: bytes) -> bytes:
    i = len(b) - 9  # the last byte of the SHA-256, before the end marker
    return b[:i] + bytes([b[i] ^ 0x01]) + b[i + 1:]


def flip_header(b: bytes) -> bytes:
    return b[:20] + bytes([b[20] ^ 0x41]) + b[21:]


DAMAGE = {
    "flipped byte in the payload": flip_middle,
    "flipped bit in the digest": flip_digest,
    "flipped byte in the header": flip_header,
    "truncated to half": lambda b: b[: len(b) // 2],
    "last byte cut": lambda b: b[:-1],
    "zeroed tail": lambda b: b[: len(b) - 64] + bytes(64),
    "empty": lambda b: b"",
    "garbage appended": lambda b: b + b"\x00garbage",
}


def test_damaged_entries_are_detected_recomputed_and_the_report_is_identical(tmp_path):
    cache_dir = tmp_path / "cache"
    first, _, r1 = render(DEMO, tmp_path / "a", cache=cache_dir, icon_steps=2)
    entries = sorted(cache_dir.glob("??/*.ig"))
    assert len(entries) >= len(DAMAGE) + 1
    # every kind of damage at least once, cycling over every entry; one entry gets another's bytes
    damaged: dict[Path, tuple[str, bytes]] = {}
    for i, p in enumerate(entries[:-1]):
        kind, fn = list(DAMAGE.items())[i % len(DAMAGE)]
        bad = fn(p.read_bytes())
        p.write_bytes(bad)
        damaged[p] = (kind, bad)
    shutil.copyfile(entries[0], entries[-1])  # a whole, valid-looking file under the wrong key
    damaged[entries[-1]] = ("another key's entry", entries[0].read_bytes())

    second, prep, r2 = render(DEMO, tmp_path / "b", cache=cache_dir, icon_steps=2)
    assert report_core(second) == report_core(first)  # identical report
    detected = prep.cache.stats.corrupt
    assert detected >= 1 and r2.stats.cache_misses + r2.stats.icons_rendered >= 1
    # each damaged file was either detected on read (moved aside and recomputed: the file now holds a
    # good entry, or is gone if nothing needed it again), or never read; the unread ones are
    # detected when they are read
    read, unread = [], []
    for p, (kind, bad) in damaged.items():
        if p.exists() and p.read_bytes() == bad:
            unread.append((p, kind))
        else:
            read.append(kind)
    assert len(read) == detected, (read, detected)
    probe = ResultCache(cache_dir, max_bytes=None)
    for p, kind in unread:
        assert probe.get(p.stem) is None, f"{kind} was not detected"
    assert probe.stats.corrupt == len(unread)
    # a third render: everything from the (repaired) cache, the same report again
    third, prep3, r3 = render(DEMO, tmp_path / "c", cache=cache_dir, icon_steps=2)
    assert report_core(third) == report_core(first)
    assert prep3.cache.stats.corrupt == 0 and r3.stats.cache_misses == 0 and r3.stats.icons_rendered == 0
    print(f"\ncache corruption: {len(damaged)} entries damaged ({len(DAMAGE) + 1} kinds), {detected} read and "
          f"detected by the render, {len(unread)} never read (detected when probed); report identical")
