"""The exceptions of the vhdx package: one class per vhdx::Errc.

Every failure of the library (a vhdx::Status that is not ok) is raised as
a subclass of :class:`vhdx.Error` carrying the library's message and code.
Where a built-in exception already means the same thing, the class derives
from it too, so ``except FileNotFoundError`` and ``except ValueError`` work
as they do with the standard library. The OSError subclasses are built
with ``(errno, message)``: ``e.errno`` is vhdx::ErrnoOf of the code.

The classes are defined in Python, not in the extension: multiple
inheritance from OSError subclasses is plain here, and the extension only
calls :func:`_make` to build the exception it raises.
"""

from __future__ import annotations

import errno as _errno


class Error(Exception):
    """Base class of every error the vhdx library reports.

    Attributes:
        message: the library's message (names the structure and offset).
        code: the vhdx::Errc name in words, e.g. ``"not found"``.
        errno: the errno the library maps the code to (vhdx::ErrnoOf).
    """

    #: vhdx::Errc value of the class (set on each subclass).
    errc: int = -1

    def __init__(self, message: str, code: str = "", errno: int = _errno.EIO) -> None:
        if isinstance(self, OSError):
            # OSError's own __init__ sets .errno and .strerror from these.
            OSError.__init__(self, errno, message)
        else:
            Exception.__init__(self, message)
        self.message = message
        self.code = code
        self.errno = errno

    def __str__(self) -> str:
        # The library's message as it is, without OSError's "[Errno N] " prefix.
        return self.message

    def __reduce__(self):  # picklable, e.g. across multiprocessing
        return (type(self), (self.message, self.code, self.errno))


class IoError(Error, OSError):
    """The host file could not be read or written (vhdx::Errc::kIoError)."""
    errc = 1


class Corrupt(Error):
    """The image violates the format: bad checksum, range, ... (kCorrupt)."""
    errc = 2


class Unsupported(Error):
    """A valid VHDX that uses something the library does not implement (kUnsupported)."""
    errc = 3


class InvalidArgument(Error, ValueError):
    """The caller asked for something impossible (kInvalidArgument)."""
    errc = 4


class NotFound(Error, FileNotFoundError):
    """A file (the image, a parent) does not exist (kNotFound)."""
    errc = 5


# PermissionError rather than plain OSError: the usual Python reaction to
# writing something one may not write; errno stays EROFS, the library's.
class ReadOnly(Error, PermissionError):
    """A write on an image opened read-only (kReadOnly)."""
    errc = 6


class NoSpace(Error, OSError):
    """The host file system is full: ENOSPC (kNoSpace)."""
    errc = 7


# ValueError: the request (offset, length, size) lies outside the disk, an
# argument error as ErrnoOf says (EINVAL).
class OutOfRange(Error, ValueError):
    """An offset or length outside the virtual disk (kOutOfRange)."""
    errc = 8


# BlockingIOError: the lock is taken without waiting (as F_SETLK answers
# EAGAIN), so the open fails instead of blocking; errno is the library's EBUSY.
class Busy(Error, BlockingIOError):
    """Another process has the image open in a conflicting way: its lock (kBusy)."""
    errc = 9


class NoMemory(Error, MemoryError):
    """An allocation or a thread the operation needs could not be had (kNoMemory)."""
    errc = 10


_BY_ERRC = {cls.errc: cls for cls in (IoError, Corrupt, Unsupported, InvalidArgument, NotFound,
                                       ReadOnly, NoSpace, OutOfRange, Busy, NoMemory)}


def _make(errc: int, code: str, errno: int, message: str) -> Error:
    """Builds the exception for a failed vhdx::Status (called by the extension)."""
    return _BY_ERRC.get(errc, Error)(message, code, errno)
