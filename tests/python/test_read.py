"""vhdx.open, reading, info and map against the corpus and its manifest."""

from __future__ import annotations

import json
import subprocess

import pytest

import vhdx
from conftest import sha256_of_disk, sha256_of_file

CORPUS_IMAGES = ["fixed.vhdx.gz", "dynamic.vhdx.gz", "swap.vhdx.gz", "btrfs.vhdx.gz", "xfs5.vhdx.gz",
                 "config2_base.vhdx.bz2", "iotest-dynamic-1G.vhdx.bz2", "iotest-dirtylog-10G-4M.vhdx.bz2"]
DIRTY = "iotest-dirtylog-10G-4M.vhdx.bz2"


@pytest.mark.parametrize("name", CORPUS_IMAGES)
def test_content_matches_manifest(corpus, name):
    path = corpus.path(name)
    with vhdx.open(path) as d:
        assert d.read_only and not d.closed
        assert d.virtual_size == corpus.virtual_size(name)
        assert sha256_of_disk(d) == corpus.sha256(name)
    assert d.closed


def test_dirty_log_read_only_leaves_file_unchanged(corpus):
    path = corpus.path(DIRTY)
    before = sha256_of_file(path)
    with vhdx.open(str(path), readonly=True) as d:
        info = d.info()
        assert info["dirty"] is True and info["log"]["active-entries"] > 0
        assert sha256_of_disk(d) == corpus.sha256(DIRTY)
    assert sha256_of_file(path) == before


def test_read_and_readinto_agree(corpus):
    # iotest-dynamic-1G: 0xa5 over 0-33 MiB, 0x96 over 33-66 MiB, zeros after
    # (MANIFEST.md). A read across both boundaries, at odd offsets.
    with vhdx.open(corpus.path("iotest-dynamic-1G.vhdx.bz2")) as d:
        mib = 1 << 20
        off, n = 33 * mib - 3, 33 * mib + 10
        data = d.read(off, n)
        assert isinstance(data, bytes) and len(data) == n
        assert data[:3] == b"\xa5" * 3
        assert data[3:3 + 33 * mib] == b"\x96" * (33 * mib)
        assert data[-7:] == bytes(7)
        buf = bytearray(n)
        assert d.readinto(off, buf) == n
        assert buf == data
        # Any writable buffer, in place: a slice of a memoryview.
        big = bytearray(16)
        assert d.readinto(0, memoryview(big)[4:12]) == 8
        assert big == bytes(4) + b"\xa5" * 8 + bytes(4)
        assert d.read(0, 0) == b""


def test_info_equals_cli_json(corpus, cli):
    # The binding repeats the CLI's rendering until include/vhdx/json.h
    # lands (python/src/info.cc): same keys, order and values.
    for name in ["fixed.vhdx.gz", "swap.vhdx.gz", DIRTY]:
        path = str(corpus.path(name))
        out = subprocess.run([cli, "info", "--output=json", path], check=True, capture_output=True, text=True)
        want = json.loads(out.stdout)
        with vhdx.open(path) as d:
            got = d.info()
        # actual-size is st_blocks: equal unless the file changed meanwhile.
        assert list(got) == list(want), name
        assert got == want, name


def test_info_fields(corpus):
    with vhdx.open(corpus.path("fixed.vhdx.gz")) as d:
        i = d.info()
    assert i["type"] == "fixed" and i["format"] == "vhdx"
    assert i["virtual-size"] == 10485760 and i["block-size"] == 2 << 20
    assert i["logical-sector-size"] == 512 and i["physical-sector-size"] == 4096
    assert [h["slot"] for h in i["headers"]] == [1, 2]
    assert {r["name"] for r in i["regions"]} == {"bat", "metadata"}
    assert i["allocation"]["payload"]["fully-present"] == 5


def test_map(corpus):
    with vhdx.open(corpus.path("iotest-dynamic-1G.vhdx.bz2")) as d:
        extents = list(d.map())
        assert extents[0].start == 0 and sum(e.length for e in extents) == d.virtual_size
        data = [e for e in extents if e.data]
        assert data and all(e.offset is not None and e.offset % (1 << 20) == 0 for e in data)
        assert all(e.zero and e.offset is None for e in extents if not e.data)
        # A window: clipped to it, and the batches merged back together.
        window = list(d.map(1 << 20, 100 << 20))
        assert window[0].start == 1 << 20 and sum(e.length for e in window) == 100 << 20
        vhdx._MAP_BATCH, saved = 1, vhdx._MAP_BATCH
        try:
            assert list(d.map()) == extents
        finally:
            vhdx._MAP_BATCH = saved


def test_errors_carry_message_and_code(tmp_path, corpus):
    with pytest.raises(vhdx.NotFound) as e:
        vhdx.open(tmp_path / "missing.vhdx")
    assert isinstance(e.value, FileNotFoundError) and isinstance(e.value, vhdx.Error)
    assert e.value.errno == 2 and e.value.code == "not found" and str(e.value) == e.value.message
    assert "No such file" in str(e.value)

    garbage = tmp_path / "garbage.vhdx"
    garbage.write_bytes(b"not a vhdx" * 100000)
    with pytest.raises(vhdx.Corrupt) as c:
        vhdx.open(garbage)
    assert "signature" in str(c.value).lower() or "vhdxfile" in str(c.value)

    with vhdx.open(corpus.path("fixed.vhdx.gz")) as d:
        with pytest.raises(vhdx.OutOfRange, match="beyond the virtual disk size") as r:
            d.read(d.virtual_size - 1, 2)
        assert isinstance(r.value, ValueError)
        with pytest.raises(vhdx.ReadOnly) as w:
            d.write(0, b"x")
        assert isinstance(w.value, PermissionError) and w.value.errno == 30  # EROFS
        # Python's own answer for a read-only buffer (as the buffer protocol gives it).
        with pytest.raises(BufferError):
            d.readinto(0, b"immutable bytes")
    with pytest.raises(vhdx.InvalidArgument, match="closed"):
        d.read(0, 1)
    d.close()  # twice: harmless


def test_path_like_and_bytes_paths(corpus):
    path = corpus.path("dynamic.vhdx.gz")
    for p in (path, str(path), bytes(path)):
        with vhdx.open(p) as d:
            assert d.virtual_size == 10485760
