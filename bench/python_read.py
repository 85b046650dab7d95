#!/usr/bin/env python3
"""Sequential read of a VHDX image from Python: vhdx (this package) through
Disk.as_file with 1 MiB reads, against the CLI and against libvhdi's Python
bindings, on the same image:
  image    2 GiB dynamic VHDX, 32 MiB blocks, every byte written with
           incompressible data (made by this package: vhdx.create, then
           1 MiB writes from a random pool); SIZE (MiB) changes the size
  as_file  f = d.as_file(); f.readinto(buf) in a loop, buf a 1 MiB bytearray
           (no copy: the library reads into buf); also f.read(1 MiB), which
           makes a new bytes object per read, reported as a second row; and
           readinto with 64 KiB reads (against pyvhdi's), the size parsers use
  cli      vhdx convert -O raw IMAGE - > /dev/null (the CLI writes the raw
           stream to stdout; `-O raw IMAGE /dev/null` is refused, since the
           output file is truncated to the disk size first)
  pyvhdi   pyvhdi.file().open(IMAGE); read_buffer(1 MiB) in a loop
Warm page cache: one untimed run each, then REPS runs (default 3), order
alternating; the median wall time of each. Before timing, the first and
last 64 MiB read by each Python reader must hash the same.
Goal: as_file >= 0.8x the CLI's throughput and >= 2x pyvhdi's.

  /usr/bin/python3 bench/python_read.py [WORKDIR]   (default /var/tmp; needs
      SIZE + a little MiB free; the image is removed at exit)
Environment: VHDX (the CLI, default build/bin/vhdx), REPS, SIZE (MiB),
PYTHONPATH or the build's venv (build/python-venv/bin/python) for `import vhdx`.
"""

import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
MIB = 1 << 20


def die(msg):
    sys.exit(f"python_read.py: {msg}")


try:
    import vhdx
except ImportError:
    die("cannot import vhdx: run with build/python-venv/bin/python (built by cmake --build build)")
try:
    import pyvhdi
except ImportError:
    die("cannot import pyvhdi: apt-get install python3-libvhdi (and run a venv made with --system-site-packages)")

CLI = os.path.realpath(os.environ.get("VHDX") or os.path.join(HERE, "..", "build", "bin", "vhdx"))
REPS = int(os.environ.get("REPS", "3"))
SIZE_MIB = int(os.environ.get("SIZE", "2048"))
if not os.access(CLI, os.X_OK):
    die(f"{CLI} not found (build it, or set VHDX=path/to/vhdx)")


def make_image(path):
    vhdx.create(path, SIZE_MIB * MIB, block_size=32 * MIB)
    pool = os.urandom(64 * MIB)
    with vhdx.open(path, readonly=False) as d:
        for k in range(SIZE_MIB):
            start = (k * 4099 * 16) % (len(pool) - MIB)  # a different slice of the pool each MiB
            d.write(k * MIB, memoryview(pool)[start:start + MIB])


def read_as_file_readinto(path, chunk=MIB):
    buf = bytearray(chunk)
    total = 0
    with vhdx.open(path) as d:
        f = d.as_file()
        while True:
            n = f.readinto(buf)
            if not n:
                break
            total += n
    return total


def read_as_file_read(path):
    total = 0
    with vhdx.open(path) as d:
        f = d.as_file()
        while True:
            b = f.read(MIB)
            if not b:
                break
            total += len(b)
    return total


def read_pyvhdi(path, chunk=MIB):
    f = pyvhdi.file()
    f.open(path)
    total = 0
    try:
        while True:
            b = f.read_buffer(chunk)
            if not b:
                break
            total += len(b)
    finally:
        f.close()
    return total


def read_cli(path):
    with open(os.devnull, "wb") as null:
        subprocess.run([CLI, "convert", "-O", "raw", path, "-"], stdout=null, check=True)
    return SIZE_MIB * MIB


def edge_hashes_vhdx(path):
    with vhdx.open(path) as d:
        f = d.as_file()
        head = hashlib.sha256(f.read(64 * MIB)).hexdigest()
        f.seek(-64 * MIB, os.SEEK_END)
        return head, hashlib.sha256(f.read(64 * MIB)).hexdigest()


def edge_hashes_pyvhdi(path):
    f = pyvhdi.file()
    f.open(path)
    head = hashlib.sha256(f.read_buffer_at_offset(64 * MIB, 0)).hexdigest()
    tail = hashlib.sha256(f.read_buffer_at_offset(64 * MIB, f.get_media_size() - 64 * MIB)).hexdigest()
    f.close()
    return head, tail


def main():
    base = os.path.realpath(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("TMPDIR", "/var/tmp"))
    work = tempfile.mkdtemp(prefix="python_read.", dir=base)
    try:
        image = os.path.join(work, "disk.vhdx")
        t0 = time.monotonic()
        make_image(image)
        print(f"image: {SIZE_MIB} MiB dynamic VHDX, 32 MiB blocks, all data ({time.monotonic() - t0:.1f} s to write)")
        print(f"vhdx {vhdx.library_version} ({CLI}); pyvhdi {pyvhdi.get_version()}; Python {sys.version.split()[0]}")
        if edge_hashes_vhdx(image) != edge_hashes_pyvhdi(image):
            die("vhdx and pyvhdi read different bytes")
        cases = [("vhdx as_file readinto 1 MiB", read_as_file_readinto), ("vhdx as_file read 1 MiB", read_as_file_read),
                 ("vhdx convert -O raw - (CLI)", read_cli), ("pyvhdi read_buffer 1 MiB", read_pyvhdi),
                 # Smaller reads, as file-system parsers issue them: per-call cost shows.
                 ("vhdx as_file readinto 64 KiB", lambda p: read_as_file_readinto(p, 64 * 1024)),
                 ("pyvhdi read_buffer 64 KiB", lambda p: read_pyvhdi(p, 64 * 1024))]
        times = {name: [] for name, _ in cases}
        for _, fn in cases:  # warm-up: the image in the page cache
            fn(image)
        for rep in range(REPS):
            order = cases if rep % 2 == 0 else list(reversed(cases))
            for name, fn in order:
                t = time.monotonic()
                n = fn(image)
                times[name].append(time.monotonic() - t)
                if n != SIZE_MIB * MIB:
                    die(f"{name} read {n} bytes, not {SIZE_MIB * MIB}")
        print(f"== median of {REPS} warm runs; MB/s = 10^6 bytes of virtual disk per second")
        med = {name: statistics.median(v) for name, v in times.items()}
        for name, _ in cases:
            runs = " ".join(f"{t:.3f}" for t in times[name])
            print(f"  {name:30s} {med[name]:7.3f} s  {SIZE_MIB * MIB / med[name] / 1e6:8.0f} MB/s   [{runs}]")
        ours = med["vhdx as_file readinto 1 MiB"]
        vs_cli = med["vhdx convert -O raw - (CLI)"] / ours
        vs_vhdi = med["pyvhdi read_buffer 1 MiB"] / ours
        print(f"as_file readinto vs CLI: {vs_cli:.2f}x the CLI's throughput (goal >= 0.8)")
        print(f"as_file readinto vs pyvhdi: {vs_vhdi:.2f}x pyvhdi's throughput (goal >= 2)")
        print(f"as_file read() vs pyvhdi: {med['pyvhdi read_buffer 1 MiB'] / med['vhdx as_file read 1 MiB']:.2f}x")
        print(f"64 KiB reads, as_file readinto vs pyvhdi: "
              f"{med['pyvhdi read_buffer 64 KiB'] / med['vhdx as_file readinto 64 KiB']:.2f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
