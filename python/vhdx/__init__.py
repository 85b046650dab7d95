"""Python bindings of libvhdx: read, write and manage Microsoft VHDX images.

    import vhdx
    with vhdx.open("disk.vhdx") as d:          # read-only by default
        head = d.read(0, 512)
        print(d.info()["virtual-size"])
        for extent in d.map():
            ...
    vhdx.convert("disk.vhdx", "disk.raw", format="raw")

Every failure raises a subclass of :class:`vhdx.Error` (see ``_errors``).
Every call into the library releases the GIL, so threads reading one image
run in parallel (the library allows any call but close() from many
threads at once).
"""

from __future__ import annotations

import errno as _errno
import io
import os
from typing import Callable, Iterable, Iterator, NamedTuple, Optional, Sequence, Union

from . import _vhdx
from ._errors import (Busy, Corrupt, Error, InvalidArgument, IoError, NoMemory, NoSpace, NotFound,
                      OutOfRange, ReadOnly, Unsupported)

__all__ = [
    "open", "create", "check", "convert", "commit", "rebase", "resize", "compact", "repair",
    "Disk", "DiskFile", "Extent", "library_version",
    "Error", "IoError", "Corrupt", "Unsupported", "InvalidArgument", "NotFound", "ReadOnly", "NoSpace",
    "OutOfRange", "Busy", "NoMemory",
]

#: Version of the C++ library the extension is built from, "MAJOR.MINOR.PATCH".
library_version: str = _vhdx.library_version

StrPath = Union[str, bytes, "os.PathLike[str]", "os.PathLike[bytes]"]
Progress = Optional[Callable[[int, int], object]]
Buffer = Union[bytes, bytearray, memoryview]  # any object with the buffer protocol is accepted

# Disk.map asks the library for this many extents at a time.
_MAP_BATCH = 4096


class Extent(NamedTuple):
    """One range of the virtual disk, as `qemu-img map` describes it."""
    start: int
    length: int
    depth: int          # 0: this image; 1: its parent; ...
    present: bool       # defined by this image (not left to a parent)
    zero: bool          # reads as zeros
    data: bool          # backed by bytes in the file
    offset: Optional[int]  # file offset of the data (data extents only)


class Disk:
    """An open VHDX image. Made by :func:`vhdx.open`; a context manager.

    Offsets and lengths are bytes of the virtual disk, any alignment. A
    request that does not lie inside the disk raises :class:`OutOfRange`;
    writes to a read-only image raise :class:`ReadOnly`.
    """

    __slots__ = ("_d", "name")

    def __init__(self, impl: _vhdx.Disk, name: str) -> None:
        self._d = impl
        self.name = name

    # -- reading ---------------------------------------------------------
    def read(self, offset: int, length: int) -> bytes:
        """Returns `length` bytes of the virtual disk at `offset`."""
        return self._d.read(offset, length)

    def readinto(self, offset: int, buffer: Buffer) -> int:
        """Reads len(buffer) bytes at `offset` into a writable contiguous
        buffer (bytearray, memoryview, mmap, numpy array, ...) without a
        copy. Returns the number of bytes read."""
        return self._d.readinto(offset, buffer)

    def map(self, start: int = 0, length: Optional[int] = None) -> Iterator[Extent]:
        """Yields the extents covering [start, start + length) (default: to
        the end of the disk), adjacent equal extents merged."""
        end = self.virtual_size if length is None else start + length
        pending: Optional[Extent] = None
        pos = start
        while pos < end:
            batch = self._d._map_batch(pos, end - pos, _MAP_BATCH)
            if not batch:
                break
            for raw in batch:
                e = Extent(*raw)
                # The library merges within a batch; merge across batches.
                if pending is not None and _mergeable(pending, e):
                    pending = pending._replace(length=pending.length + e.length)
                    continue
                if pending is not None:
                    yield pending
                pending = e
            pos = pending.start + pending.length
        if pending is not None:
            yield pending

    def prefetch(self, offset: int, length: int) -> None:
        """Hints that [offset, offset + length) will be read soon."""
        self._d.prefetch(offset, length)

    def info(self) -> dict:
        """What `vhdx info --output=json` shows for this image, as a dict
        with the same keys ("virtual-size", "block-size", "headers", ...)."""
        return self._d.info()

    @property
    def virtual_size(self) -> int:
        """Size of the virtual disk in bytes."""
        return self._d.virtual_size

    @property
    def read_only(self) -> bool:
        return self._d.read_only

    @property
    def closed(self) -> bool:
        return self._d.closed

    # -- writing ---------------------------------------------------------
    def write(self, offset: int, data: Buffer, *, fua: bool = False) -> int:
        """Writes a bytes-like object at `offset` (no copy). With `fua` the
        write is durable when it returns. Returns len(data) in bytes."""
        return self._d.write(offset, data, fua=fua)

    def discard(self, offset: int, length: int) -> None:
        """The range reads as zeros afterwards; whole blocks of a dynamic
        image give back their file space."""
        self._d.discard(offset, length)

    def write_zeroes(self, offset: int, length: int, *, may_unmap: bool = False) -> None:
        """The range reads as zeros afterwards. With `may_unmap`, whole
        blocks of a dynamic image give back their space; otherwise they are
        zeroed in place."""
        self._d.write_zeroes(offset, length, may_unmap=may_unmap)

    def flush(self) -> None:
        """Makes every completed write, discard and write_zeroes durable."""
        self._d.flush()

    def write_stats(self) -> dict:
        """Counts of what the write path has done since the open (flushes,
        log_entries, blocks_allocated, blocks_released, header_updates)."""
        return self._d.write_stats()

    # -- life ------------------------------------------------------------
    def close(self) -> None:
        """Flushes, applies the log (a clean file) and closes the image.
        Waits for calls in flight in other threads. Harmless when closed."""
        self._d.close()

    def __enter__(self) -> "Disk":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def as_file(self) -> "DiskFile":
        """A file object (io.RawIOBase: read, readinto, write, seek, tell)
        over the virtual disk, for code that wants a file: shutil, hashlib
        loops, dissect-style readers. Closing it leaves the image open."""
        return DiskFile(self)

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("read-only" if self.read_only else "read-write")
        return f"<vhdx.Disk {self.name!r} {state}>"


def _mergeable(a: Extent, b: Extent) -> bool:
    if a.start + a.length != b.start or (a.depth, a.present, a.zero, a.data) != (b.depth, b.present, b.zero, b.data):
        return False
    if a.offset is None or b.offset is None:
        return a.offset is None and b.offset is None
    return a.offset + a.length == b.offset


class DiskFile(io.RawIOBase):
    """The virtual disk of a :class:`Disk` as a seekable raw file.

    Reads stop at the end of the disk (a short read, then b""); a write
    that starts at or past the end raises :class:`NoSpace`, as a block
    device answers ENOSPC, and one that runs past it is cut short. The size
    is fixed: truncate() is not supported.
    """

    def __init__(self, disk: Disk) -> None:
        super().__init__()
        self._disk = disk
        self._size = disk.virtual_size
        self._pos = 0
        self.name = disk.name

    def readable(self) -> bool:
        self._checkClosed()
        return True

    def writable(self) -> bool:
        self._checkClosed()
        return not self._disk.read_only

    def seekable(self) -> bool:
        self._checkClosed()
        return True

    def tell(self) -> int:
        self._checkClosed()
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._checkClosed()
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self._size + offset
        else:
            raise ValueError(f"invalid whence ({whence})")
        if pos < 0:
            raise ValueError(f"negative seek position {pos}")
        self._pos = pos
        return pos

    def readinto(self, buffer) -> int:
        self._checkClosed()
        view = memoryview(buffer).cast("B")
        n = max(0, min(len(view), self._size - self._pos))
        if n:
            self._disk.readinto(self._pos, view[:n])
            self._pos += n
        return n

    # RawIOBase.read would read into a bytearray and copy it into bytes;
    # reading straight into a new bytes object saves that copy.
    def read(self, size: int = -1) -> bytes:
        self._checkClosed()
        if size is None or size < 0:
            return self.readall()
        n = max(0, min(size, self._size - self._pos))
        data = self._disk.read(self._pos, n) if n else b""
        self._pos += n
        return data

    def readall(self) -> bytes:
        return self.read(max(0, self._size - self._pos))

    def write(self, buffer) -> int:
        self._checkClosed()
        if self._disk.read_only:
            raise io.UnsupportedOperation("write: the image is open read-only")
        view = memoryview(buffer).cast("B")
        if not len(view):
            return 0
        n = min(len(view), self._size - self._pos)
        if n <= 0:
            raise NoSpace(f"{self.name}: write at {self._pos} past the end of the disk ({self._size} bytes)",
                          "no space left", _errno.ENOSPC)
        self._disk.write(self._pos, view[:n])
        self._pos += n
        return n

    def truncate(self, size: Optional[int] = None) -> int:
        raise io.UnsupportedOperation("truncate: a virtual disk has a fixed size (see vhdx.resize)")

    def flush(self) -> None:
        # Like a raw file's flush: nothing is buffered here. Disk.flush is
        # the durability point (fsync), not called on every flush().
        super().flush()


def open(path: StrPath, readonly: bool = True, *, parent_dirs: Iterable[StrPath] = (),
         parent_path: Optional[StrPath] = None, direct_io: bool = False, force_share: bool = False,
         ignore_parent_linkage: bool = False, skip_parent: bool = False) -> Disk:
    """Opens the VHDX image at `path`.

    readonly: False opens read-write (a dirty log is then replayed into the
        file); read-only opens never write (the log is replayed in memory).
    parent_dirs: extra folders to look for the parents of a differencing
        image in, at every level of the chain.
    parent_path: the immediate parent's path, when it is not where the
        image's locator says.
    direct_io: O_DIRECT (bypass the host page cache).
    force_share: take no lock (read-only only, as qemu-img -U).
    ignore_parent_linkage: open a chain whose parent changed (forensics).
    skip_parent: open a differencing image alone (info() works, reads fail).
    """
    impl = _vhdx._open(path, readonly, list(parent_dirs), parent_path, direct_io, force_share,
                       ignore_parent_linkage, skip_parent)
    return Disk(impl, os.fsdecode(path))


def create(path: StrPath, size: int = 0, *, type: str = "dynamic", block_size: int = 32 << 20,
           logical_sector_size: int = 512, physical_sector_size: int = 4096,
           parent: Optional[StrPath] = None, parent_dirs: Iterable[StrPath] = ()) -> None:
    """Creates a new image at `path` (an existing file is refused).

    type: "dynamic" or "fixed" (space reserved up front).
    parent: makes a differencing child of that image instead; `size` 0
        then takes the parent's size, and the sector sizes are the parent's.
    """
    _vhdx._create(path, size, type, block_size, logical_sector_size, physical_sector_size, parent,
                  list(parent_dirs))


def check(path: StrPath, *, force_share: bool = False) -> dict:
    """Validates every structure, read-only. Returns the report as a dict:
    findings (severity, structure, offset, message, ...), errors, warnings,
    corruptions, complete, leaks, leaked_units, image_end_offset, ...
    A damaged image is a report, not an exception."""
    return _vhdx._check(path, force_share)


def convert(src: StrPath, dst: StrPath, *, format: str = "vhdx", source_format: str = "detect",
            type: str = "dynamic", virtual_size: int = 0, block_size: int = 32 << 20,
            logical_sector_size: int = 512, physical_sector_size: int = 4096,
            parent_dirs: Iterable[StrPath] = (), sync: bool = True, progress: Progress = None) -> None:
    """Converts `src` (a VHDX image, read through its chain, or a raw disk)
    to a new `dst`: format "vhdx" (with type, block_size, sector sizes) or
    "raw" (sparse). progress(done, total) is called now and then; an
    exception it raises is raised when the conversion has finished."""
    _vhdx._convert(src, dst, format, source_format, type, virtual_size, block_size, logical_sector_size,
                   physical_sector_size, list(parent_dirs), sync, progress)


def commit(child: StrPath, *, parent_dirs: Iterable[StrPath] = (), keep_child: bool = False,
           progress: Progress = None) -> dict:
    """Merges a differencing image into its parent (crash-safe). Returns
    {"parent_path", "bytes_copied"}. The child is emptied unless keep_child."""
    return _vhdx._commit(child, list(parent_dirs), keep_child, progress)


def rebase(child: StrPath, new_parent: StrPath, *, parent_dirs: Iterable[StrPath] = (),
           force: bool = False) -> None:
    """Points a differencing image at a moved or renamed copy of its parent."""
    _vhdx._rebase(child, new_parent, list(parent_dirs), force)


def resize(path: StrPath, size: int, *, shrink: bool = False, parent_dirs: Iterable[StrPath] = (),
           progress: Progress = None) -> dict:
    """Sets the virtual size (a smaller one needs shrink=True). Returns
    old_size, new_size, file_size_before/after, bat_relocated, ..."""
    return _vhdx._resize(path, size, shrink, list(parent_dirs), progress)


def compact(path: StrPath, *, dry_run: bool = False, file_system: bool = True,
            parent_dirs: Iterable[StrPath] = (), progress: Progress = None) -> dict:
    """Gives back the file space of all-zero blocks (and, with file_system,
    of blocks in ext2/3/4 free space) and truncates the file. Returns
    file_size_before/after, blocks_zero, blocks_moved, notices, ..."""
    return _vhdx._compact(path, dry_run, file_system, list(parent_dirs), progress)


def repair(path: StrPath, mode: str = "all", *, force_share: bool = False) -> dict:
    """Checks and repairs (vhdx check -r): mode "all", "leaks" or "none".
    Returns before and after (check reports), actions, not_repaired,
    corruptions, leaks, corruptions_fixed, leaks_fixed, ..."""
    return _vhdx._repair(path, mode, force_share)
