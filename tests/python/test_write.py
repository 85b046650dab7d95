"""Writing through Disk, and the whole-image operations: create, check,
convert, commit, rebase, resize, compact, repair."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys

import pytest

import vhdx
from conftest import sha256_of_disk, sha256_of_file

MIB = 1 << 20


def pattern(n: int, seed: int) -> bytes:
    """n bytes that differ at every offset and between seeds."""
    out = bytearray()
    counter = 0
    while len(out) < n:
        out += hashlib.sha256(b"%d:%d" % (seed, counter)).digest()
        counter += 1
    return bytes(out[:n])


def test_create_write_read_back(tmp_path):
    path = tmp_path / "d.vhdx"
    vhdx.create(path, 64 * MIB, block_size=MIB)
    with vhdx.open(path, readonly=False) as d:
        assert not d.read_only and d.virtual_size == 64 * MIB
        data = pattern(3 * MIB + 5, 1)
        assert d.write(MIB - 7, data) == len(data)
        assert d.write(40 * MIB, memoryview(bytearray(b"\x11" * 4096)), fua=True) == 4096
        d.flush()
        assert d.read(MIB - 7, len(data)) == data
        assert d.write_stats()["blocks_allocated"] >= 4
    with vhdx.open(path) as d:
        assert d.read(MIB - 7, len(data)) == data
        assert d.read(0, MIB - 7) == bytes(MIB - 7)
        assert d.read(40 * MIB, 4096) == b"\x11" * 4096
        i = d.info()
        assert i["dirty"] is False and i["type"] == "dynamic" and i["block-size"] == MIB
    report = vhdx.check(path)
    assert report["errors"] == 0 and report["complete"] and report["corruptions"] == 0


def test_discard_and_write_zeroes(tmp_path):
    path = tmp_path / "z.vhdx"
    vhdx.create(path, 16 * MIB, block_size=MIB)
    with vhdx.open(path, readonly=False) as d:
        d.write(0, b"\xff" * (8 * MIB))
        d.discard(MIB, 2 * MIB)
        d.write_zeroes(4 * MIB + 100, 1000)
        d.write_zeroes(5 * MIB, MIB, may_unmap=True)
        d.flush()
        assert d.read(MIB, 2 * MIB) == bytes(2 * MIB)
        assert d.read(4 * MIB + 99, 1002) == b"\xff" + bytes(1000) + b"\xff"
        assert d.read(5 * MIB, MIB) == bytes(MIB)
        assert d.read(0, MIB) == b"\xff" * MIB
        states = {(e.start, e.length): e for e in d.map(0, 8 * MIB)}
        assert not states[(MIB, 2 * MIB)].data  # discarded whole blocks hold no data
        assert d.write_stats()["blocks_released"] >= 3


def test_fixed_and_errors_of_create(tmp_path):
    path = tmp_path / "f.vhdx"
    vhdx.create(path, 8 * MIB, type="fixed", block_size=MIB, logical_sector_size=4096)
    with vhdx.open(path) as d:
        i = d.info()
    assert i["type"] == "fixed" and i["logical-sector-size"] == 4096
    with pytest.raises(vhdx.Error):  # exists: refused
        vhdx.create(path, 8 * MIB)
    with pytest.raises(vhdx.InvalidArgument, match="block"):
        vhdx.create(tmp_path / "bad.vhdx", 8 * MIB, block_size=3 * MIB)
    with pytest.raises(vhdx.InvalidArgument, match="type"):
        vhdx.create(tmp_path / "bad2.vhdx", 8 * MIB, type="sparse")
    assert not (tmp_path / "bad.vhdx").exists()


def test_write_past_end_and_read_only(tmp_path):
    path = tmp_path / "e.vhdx"
    vhdx.create(path, 4 * MIB, block_size=MIB)
    with vhdx.open(path, readonly=False) as d:
        with pytest.raises(vhdx.OutOfRange):
            d.write(4 * MIB - 1, b"xy")
        with pytest.raises(vhdx.OutOfRange):
            d.discard(4 * MIB, MIB)


BUSY_HOLDER = """
import sys, vhdx
d = vhdx.open(sys.argv[1], readonly=False)
print("ready", flush=True)
sys.stdin.read()
"""


def test_busy_while_another_process_writes(tmp_path):
    path = tmp_path / "busy.vhdx"
    vhdx.create(path, 4 * MIB)
    holder = subprocess.Popen([sys.executable, "-c", BUSY_HOLDER, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(vhdx.Busy) as e:
            vhdx.open(path)
        assert isinstance(e.value, BlockingIOError) and e.value.errno == 16  # EBUSY
        with pytest.raises(vhdx.Busy):
            vhdx.resize(path, 8 * MIB)
        with vhdx.open(path, force_share=True) as d:  # qemu-img -U
            assert d.virtual_size == 4 * MIB
    finally:
        holder.communicate("", timeout=60)
    assert holder.returncode == 0


def test_convert_raw_and_vhdx_with_progress(tmp_path, corpus):
    src = corpus.path("iotest-dynamic-1G.vhdx.bz2")
    want = corpus.sha256("iotest-dynamic-1G.vhdx.bz2")
    calls = []
    raw = tmp_path / "out.raw"
    vhdx.convert(src, raw, format="raw", progress=lambda done, total: calls.append((done, total)))
    assert sha256_of_file(raw) == want
    assert calls and calls[-1][1] == 1 << 30 and all(d <= t for d, t in calls)
    assert os.stat(raw).st_blocks * 512 < 200 * MIB  # sparse: zeros left as holes

    out = tmp_path / "out.vhdx"
    vhdx.convert(raw, out, source_format="raw", block_size=8 * MIB, sync=False)
    with vhdx.open(out) as d:
        assert d.info()["block-size"] == 8 * MIB
        assert sha256_of_disk(d) == want

    fixed = tmp_path / "fixed.vhdx"
    vhdx.convert(src, fixed, type="fixed", block_size=MIB)
    with vhdx.open(fixed) as d:
        assert d.info()["type"] == "fixed" and sha256_of_disk(d) == want


def test_progress_exception_raised_after_the_operation(tmp_path, corpus):
    def progress(done, total):
        raise KeyError("stop")

    out = tmp_path / "p.raw"
    with pytest.raises(KeyError, match="stop"):
        vhdx.convert(corpus.path("dynamic.vhdx.gz"), out, format="raw", progress=progress)
    # The library ran to its end (it cannot be interrupted): a whole output.
    assert sha256_of_file(out) == corpus.sha256("dynamic.vhdx.gz")


def test_convert_errors(tmp_path, corpus):
    with pytest.raises(vhdx.NotFound):
        vhdx.convert(tmp_path / "none.vhdx", tmp_path / "x.raw", format="raw")
    with pytest.raises(vhdx.InvalidArgument, match="format"):
        vhdx.convert(corpus.path("dynamic.vhdx.gz"), tmp_path / "x.qcow2", format="qcow2")


def make_chain(tmp_path):
    base = tmp_path / "base.vhdx"
    vhdx.create(base, 32 * MIB, block_size=MIB)
    with vhdx.open(base, readonly=False) as d:
        d.write(0, b"\x01" * (8 * MIB))
    child = tmp_path / "child.vhdx"
    vhdx.create(child, parent=base)
    with vhdx.open(child, readonly=False) as d:
        d.write(2 * MIB + 512, b"\x02" * 4096)
        d.write(20 * MIB, b"\x03" * MIB)
    expect = bytearray(b"\x01" * (8 * MIB) + bytes(24 * MIB))
    expect[2 * MIB + 512:2 * MIB + 512 + 4096] = b"\x02" * 4096
    expect[20 * MIB:21 * MIB] = b"\x03" * MIB
    return base, child, bytes(expect)


def test_chain_read_commit(tmp_path):
    base, child, expect = make_chain(tmp_path)
    with vhdx.open(child) as d:
        assert d.read(0, 32 * MIB) == expect
        i = d.info()
        assert i["type"] == "differencing" and i["backing-filename"] == r".\base.vhdx"  # as Hyper-V writes relative_path
        assert any(e.depth == 1 for e in d.map())
    calls = []
    result = vhdx.commit(child, progress=lambda done, total: calls.append(done))
    assert os.path.samefile(result["parent_path"], base) and result["bytes_copied"] >= MIB + 4096
    with vhdx.open(base) as d:
        assert d.read(0, 32 * MIB) == expect
    with vhdx.open(child) as d:  # emptied: reads through to the parent
        assert d.read(0, 32 * MIB) == expect
        assert all(e.depth == 1 or not e.data for e in d.map())


def test_rebase_and_parent_dirs(tmp_path):
    base, child, expect = make_chain(tmp_path)
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    shutil.move(base, moved / "renamed.vhdx")
    with pytest.raises(vhdx.NotFound):
        vhdx.open(child)
    vhdx.rebase(child, moved / "renamed.vhdx")
    with vhdx.open(child) as d:
        assert d.read(0, 32 * MIB) == expect
        assert d.info()["backing-filename"].endswith("renamed.vhdx")
    # parent_dirs: the locator's file name is looked for there.
    other = tmp_path / "dirs"
    other.mkdir()
    shutil.copy(moved / "renamed.vhdx", other / "renamed.vhdx")
    os.remove(moved / "renamed.vhdx")
    with vhdx.open(child, parent_dirs=[other]) as d:
        assert d.read(0, 32 * MIB) == expect
    with vhdx.open(child, skip_parent=True) as d:
        with pytest.raises(vhdx.Error):
            d.read(0, 512)


def test_resize(tmp_path):
    path = tmp_path / "r.vhdx"
    vhdx.create(path, 8 * MIB, block_size=MIB)
    with vhdx.open(path, readonly=False) as d:
        d.write(7 * MIB, b"\x07" * MIB)
    r = vhdx.resize(path, 64 * MIB)
    assert (r["old_size"], r["new_size"]) == (8 * MIB, 64 * MIB)
    with vhdx.open(path) as d:
        assert d.virtual_size == 64 * MIB
        assert d.read(7 * MIB, 2 * MIB) == b"\x07" * MIB + bytes(MIB)
    with pytest.raises(vhdx.Error, match="shrink"):
        vhdx.resize(path, 4 * MIB)
    assert vhdx.resize(path, 4 * MIB, shrink=True)["new_size"] == 4 * MIB
    with pytest.raises(vhdx.InvalidArgument):
        vhdx.resize(path, 4 * MIB + 1)


def test_compact(tmp_path):
    path = tmp_path / "c.vhdx"
    vhdx.create(path, 16 * MIB, block_size=MIB)
    with vhdx.open(path, readonly=False) as d:
        for k in range(8):
            d.write(k * MIB, bytes([k + 1]) * MIB)
        for k in range(0, 8, 2):  # every other block becomes all zeros, in place
            d.write(k * MIB, bytes(MIB))
    before = os.path.getsize(path)
    dry = vhdx.compact(path, dry_run=True)
    assert dry["dry_run"] and os.path.getsize(path) == before
    r = vhdx.compact(path, file_system=False)
    assert r["blocks_zero"] == 4 and r["file_size_after"] < r["file_size_before"] == before
    assert os.path.getsize(path) == r["file_size_after"]
    with vhdx.open(path) as d:
        for k in range(8):
            assert d.read(k * MIB, MIB) == (bytes(MIB) if k % 2 == 0 else bytes([k + 1]) * MIB)
    assert vhdx.check(path)["errors"] == 0


def test_repair_dirty_log_copy(tmp_path, corpus):
    name = "iotest-dirtylog-10G-4M.vhdx.bz2"
    copy = tmp_path / "dirty.vhdx"
    shutil.copy(corpus.path(name), copy)
    looked = vhdx.repair(copy, "none")
    assert looked["actions"] == [] and looked["log_entries_replayed"] == 0
    r = vhdx.repair(copy)
    assert r["log_entries_replayed"] >= 1 and r["corruptions"] == 0
    assert any(a["structure"] == "log" for a in r["actions"])
    with vhdx.open(copy) as d:
        assert d.info()["dirty"] is False
        assert sha256_of_disk(d) == corpus.sha256(name)
    with pytest.raises(vhdx.InvalidArgument, match="mode"):
        vhdx.repair(copy, "some")


def test_check_reports_damage(tmp_path):
    path = tmp_path / "damaged.vhdx"
    vhdx.create(path, 8 * MIB, block_size=MIB)
    with open(path, "r+b") as f:  # header 1 (at 64 KiB): break its checksum
        f.seek(64 * 1024 + 100)
        f.write(b"\xde\xad")
    report = vhdx.check(path)
    assert report["corruptions"] >= 1
    assert any(f["structure"] == "header 1" for f in report["findings"])
    fixed = vhdx.repair(path)
    assert fixed["corruptions_fixed"] >= 1 and fixed["after"]["corruptions"] == 0
