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


# FFmpeg's errnos that speak about the data, since we only ever hand it bytes in memory: its
# demuxers answer "the bytes ran out" with EIO, and av_malloc answers ENOMEM, without trying,
# to any single allocation over 2 GiB, which is what a header lying about a count asks for
# (found by the fuzzer: an MP4 whose stts box claims 2**31 entries). Under Linux overcommit a
# real shortage kills the process rather than failing a malloc, so nothing real is lost.
_FFMPEG_DATA_ERRNOS = frozenset({errno.EIO, errno.ENOMEM})


def is_machine_fault(error: BaseException) -> bool:
    """True for failures of the machine rather than of the input: ``MemoryError`` (numpy's
    allocation failures included) and ``OSError`` with a resource or I/O errno, except the
    errnos by which FFmpeg describes the data (above)."""
    if _from_ffmpeg(error) and getattr(error, "errno", None) in _FFMPEG_DATA_ERRNOS:
        return False
    if isinstance(error, MemoryError):
        return True
    return isinstance(error, OSError) and error.errno in _MACHINE_ERRNOS


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
