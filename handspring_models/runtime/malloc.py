"""glibc's malloc, set to keep the large buffers of a forward pass for the next one.

A batch's activations are tensors of several MB each (32 texts of 77 tokens through a 2048-wide MLP
is 20 MB). By default glibc serves allocations above its mmap threshold (128 KB, raised as large
blocks are freed, up to 32 MB) with fresh memory maps, and gives free memory at the top of its heap
back to the system past its trim threshold. Either way every pass page-faults its activations in
again, 4 KB at a time: on a virtual machine, with other engines allocating in the same process, that
was measured at up to 1.6x the time of a batch of texts (see README, "Which mode to run"). ONNX
Runtime and OpenVINO keep arenas of their own; this keeps the freed blocks in glibc's heap instead.

Process-wide, applied at the end of each model load on the torch backend (after the load's own
large buffers are gone). It trades memory that stays mapped after the largest batch (up to
``TRIM_THRESHOLD_BYTES`` of it free) for the faults. The service sets a lower trim threshold of its
own once the model is loaded (``app/memory.py``). Elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import os

M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 << 20  # glibc's largest: blocks up to 32 MB come from the heap
TRIM_THRESHOLD_BYTES = 512 << 20  # free memory kept at the heap's top before any is given back


def is_glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    except (ValueError, OSError, AttributeError):  # not a glibc system, or no confstr
        return False


def keep_freed_buffers() -> bool:
    """Raise glibc's mmap and trim thresholds (this also stops it adjusting them). True where
    applied, False where the C library is not glibc or refused."""
    if not is_glibc():
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
