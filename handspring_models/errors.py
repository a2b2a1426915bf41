"""Whose fault is it? The one place that tells a bad input from a failing machine.

The contract of every ``prepare``: a defect of the input itself (bytes that do not decode, a
header that lies, a file over a limit) raises ``InvalidInputError``; a fault of the machine
(out of memory, file descriptors, disk) propagates unchanged, and so does anything else that is
not about the bytes (a bug of ours). Decoders (Pillow, FFmpeg through PyAV) raise all sorts of
types on malformed data, so their calls run inside ``decoding(...)``, which sorts them.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")


class InvalidInputError(ValueError):
    """The client sent something that is not a usable input (bad bytes, bomb, odd mode...)."""


# errnos that describe the machine, never the bytes: memory, descriptors, disk, threads.
_MACHINE_ERRNOS = frozenset(getattr(errno, name) for name in (
    "ENOMEM", "ENOBUFS", "EMFILE", "ENFILE", "ENOSPC", "EDQUOT", "EROFS", "EIO", "EAGAIN",
) if hasattr(errno, name))


def is_machine_fault(error: BaseException) -> bool:
    """True for failures of the machine rather than of the input: any ``MemoryError`` (PyAV's
    ENOMEM and numpy's allocation failures included) and ``OSError`` with a resource or I/O errno.

    One exception: FFmpeg's demuxers answer "ran out of bytes" with EIO, and we only ever hand
    FFmpeg bytes in memory, so an EIO from FFmpeg is about the data."""
    if isinstance(error, MemoryError):
        return True
    if not isinstance(error, OSError) or error.errno not in _MACHINE_ERRNOS:
        return False
    return not (error.errno == errno.EIO and _from_ffmpeg(error))


def _from_ffmpeg(error: BaseException) -> bool:
    return type(error).__module__ == "av.error"


def reason(error: BaseException) -> str:
    """A decoder's own words, one short line, without PyAV's errno and file-name decoration."""
    text = getattr(error, "strerror", None) or str(error)
    return " ".join(str(text).split())[:200] or type(error).__name__


@contextmanager
def decoding(what: str, errors: type[BaseException] | tuple[type[BaseException], ...] = Exception):
    """Run a decoder on a client's bytes: what it raises (of ``errors``) becomes
    ``InvalidInputError("<what>: <reason>")``, except faults of the machine, which propagate.

    Wrap the decoder's calls, not our own code around them: a bug of ours must not pass for
    a bad input."""
    try:
        yield
    except InvalidInputError:
        raise
    except errors as e:
        if is_machine_fault(e):
            raise
        raise InvalidInputError(f"{what}: {reason(e)}") from None


def decoded(items: Iterable[T], what: str) -> Iterator[T]:
    """``items`` (a decoder's lazy stream of frames or packets), with each step run in
    ``decoding(what)``, while the loop body that consumes them stays outside it."""
    iterator = iter(items)
    while True:
        with decoding(what):
            try:
                item = next(iterator)
            except StopIteration:
                return
        yield item
