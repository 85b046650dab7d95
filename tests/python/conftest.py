"""Shared fixtures of the Python tests: the corpus, the CLI, scratch files.

Conventions as the C++ tests' (tests/support/test_util.h): the corpus is
$VHDX_CORPUS, else $VHDX_DEFAULT_CORPUS (ctest sets it to ../shared/corpus
beside the sources); a test that needs something missing (the corpus, a
peer tool) is skipped with the reason, visibly (ctest runs pytest -rs),
and fails instead in strict mode ($VHDX_STRICT set and not "0").
"""

from __future__ import annotations

import bz2
import fcntl
import gzip
import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

import vhdx

HERE = Path(__file__).resolve().parent
SOURCE_DIR = HERE.parent.parent


def strict_mode() -> bool:
    value = os.environ.get("VHDX_STRICT", "")
    return value not in ("", "0")


def require(missing: str, what: str) -> None:
    """Skips (or, in strict mode, fails) the calling test when `missing` is not empty."""
    if not missing:
        return
    if strict_mode():
        pytest.fail(f"missing in strict mode (VHDX_STRICT): {missing} ({what})")
    pytest.skip(f"{what} not run: {missing}")


def corpus_dir() -> Path | None:
    d = os.environ.get("VHDX_CORPUS") or os.environ.get("VHDX_DEFAULT_CORPUS") or str(
        SOURCE_DIR.parent / "shared" / "corpus")
    p = Path(d)
    return p.resolve() if (p / "MANIFEST.md").is_file() else None


def manifest(directory: Path) -> dict[str, dict]:
    """MANIFEST.md's table: file name -> {"virtual_size": int, "sha256": str}."""
    out = {}
    for line in (directory / "MANIFEST.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 9 and re.fullmatch(r"[0-9a-f]{64}", cells[-1]) and cells[6].isdigit():
            out[cells[0]] = {"virtual_size": int(cells[6]), "sha256": cells[-1]}
    return out


def cache_dir() -> Path:
    d = Path(os.environ.get("VHDX_TEST_CACHE_DIR") or (SOURCE_DIR / "build" / "test-cache"))
    d.mkdir(parents=True, exist_ok=True)
    return d


class Corpus:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.images = manifest(directory)
        assert self.images, f"no images listed in {directory / 'MANIFEST.md'}"

    def path(self, name: str) -> Path:
        """The decompressed image `name` (e.g. "fixed.vhdx.gz"), made once
        in the test cache (py-corpus-*, beside the C++ tests' copies) under
        a lock. Callers only read it: copy it before writing."""
        src = self.dir / name
        leaf = name.rsplit(".", 1)[0]
        out = cache_dir() / f"py-corpus-{leaf}"
        stamp = out.with_name(out.name + ".stamp")
        want = f"{src.stat().st_size} {src.stat().st_mtime_ns}"
        with open(out.with_name(out.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not out.exists() or not stamp.exists() or stamp.read_text() != want + f" {out.stat().st_mtime_ns}":
                opener = gzip.open if name.endswith(".gz") else bz2.open
                tmp = out.with_name(out.name + ".tmp")
                with opener(src, "rb") as fin, open(tmp, "wb") as fout:
                    copy_sparse(fin, fout)
                os.replace(tmp, out)
                stamp.write_text(want + f" {out.stat().st_mtime_ns}")
        return out

    def sha256(self, name: str) -> str:
        return self.images[name]["sha256"]

    def virtual_size(self, name: str) -> int:
        return self.images[name]["virtual_size"]


def copy_sparse(fin, fout, chunk: int = 1 << 20) -> None:
    """Copies leaving holes for all-zero MiBs (the images are mostly empty)."""
    zero = bytes(chunk)
    while True:
        data = fin.read(chunk)
        if not data:
            break
        if data == zero[: len(data)]:
            fout.seek(len(data), os.SEEK_CUR)
        else:
            fout.write(data)
    fout.truncate()


@pytest.fixture(scope="session")
def corpus() -> Corpus:
    d = corpus_dir()
    require("" if d else "no corpus (set VHDX_CORPUS to the folder holding MANIFEST.md)", "corpus test")
    return Corpus(d)


@pytest.fixture(scope="session")
def cli() -> str:
    path = os.environ.get("VHDX_CLI") or str(SOURCE_DIR / "build" / "bin" / "vhdx")
    require("" if os.access(path, os.X_OK) else f"the vhdx CLI is not built ({path})", "CLI comparison")
    return path


def need_tool(tool: str) -> str:
    found = shutil.which(tool)
    require("" if found else f"{tool} is not installed", f"test using {tool}")
    return found


def sha256_of_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for data in iter(lambda: f.read(1 << 20), b""):
            h.update(data)
    return h.hexdigest()


def sha256_of_disk(d: vhdx.Disk) -> str:
    """The whole virtual disk's SHA-256, read through Disk.readinto, with
    the zero extents of Disk.map fed from a zero buffer instead of read
    (10 GiB corpus disks are mostly zeros): exercises map and readinto."""
    h = hashlib.sha256()
    buf = bytearray(4 << 20)
    zeros = bytes(len(buf))
    view = memoryview(buf)
    covered = 0
    for e in d.map():
        assert e.start == covered, f"map has a gap or overlap at {covered}: {e}"
        pos, end = e.start, e.start + e.length
        while pos < end:
            n = min(len(buf), end - pos)
            if e.zero:
                h.update(zeros[:n])
            else:
                assert d.readinto(pos, view[:n]) == n
                h.update(view[:n])
            pos += n
        covered = end
    assert covered == d.virtual_size
    return h.hexdigest()


# ctest runs the whole suite as one test. When tests were skipped (no
# corpus, a missing tool) and nothing failed, this line makes ctest report
# the run as skipped (SKIP_REGULAR_EXPRESSION in python/CMakeLists.txt)
# rather than as a plain pass; it is printed only when every test that ran
# passed, so it never hides a failure.
def pytest_terminal_summary(terminalreporter, exitstatus, config):
    skipped = terminalreporter.stats.get("skipped", [])
    if int(exitstatus) == 0 and skipped:
        terminalreporter.write_line(f"VHDX-PYTHON-NOT-ALL-RUN: {len(skipped)} test(s) skipped, reasons above")
