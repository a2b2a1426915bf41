"""Keep the process's memory from growing with traffic it has already served.

- glibc gives every thread that allocates its own arena (up to 8 per core), and memory freed in
  an arena stays with it. Our decoding, inference and event-loop threads each touch large,
  short-lived buffers, so under load the process grows by arenas full of freed memory. Measured
  here under the benchmark's load: 706 -> 673 MB peak RSS with two arenas instead of glibc's
  default, and, once the caches below were bounded, 657-661 -> 630-637 MB with one instead of
  two; throughput unchanged (small blocks come from per-thread caches without the arena lock).
- oneDNN (under PyTorch's linear layers) builds one primitive per input shape and thread count,
  and two caches keep them (oneDNN's own and PyTorch's ideep one, 1024 entries each by
  default). A bf16 primitive and ideep's copy of its descriptor hold 0.3-0.55 MB (measured with
  mallinfo for CLIP's shapes). Texts come in every batch x length, so the caches fill: +120-180
  MB under the benchmark's load, hundreds of MB more in principle. Bounding both caches bounds
  that.
- Loading allocates and frees every weight twice (cast, then packed), and glibc's adaptive
  mmap threshold sends much of that into the heap, where the freed copies stay resident: ~50 MB
  of free heap after CLIP's load (anonymous memory 460 -> 409 MB after a trim).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os

# from glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
# Cache sizes, read by oneDNN and ideep on first use. A pass of CLIP's text or image tower needs
# 4-5 primitives for its batch shape and thread count. oneDNN's cache keeps 128: lone texts of
# the benchmark's 17 lengths needed 68 at two threads (48 since texts pad to even widths), and
# 64 entries thrashed (one text 14-16 ms instead of 12; a miss costs 0.3-0.45 ms of kernel
# generation). ideep's cache sits in front of oneDNN's and holds its own copy of each
# descriptor, so it keeps only what one pass per inference thread needs (a miss there costs
# ~0.02 ms when oneDNN's cache hits).
KERNEL_CACHE_CAPACITIES = {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": 128, "LRU_CACHE_CAPACITY": 16}


def _glibc():
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def limit_malloc_arenas(arenas: int = 1) -> bool:
    """Cap glibc's arenas unless MALLOC_ARENA_MAX already set them; False where libc is not glibc."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        return bool(_glibc().mallopt(M_ARENA_MAX, arenas))
    except (OSError, AttributeError):  # musl, macOS...: nothing to tune
        return False


def bound_kernel_caches() -> dict[str, str]:
    """Bound oneDNN's and ideep's primitive caches (``KERNEL_CACHE_CAPACITIES``) where their own
    variables are not already set. Must run before torch's first linear layer. Returns the
    values in force."""
    for name, capacity in KERNEL_CACHE_CAPACITIES.items():
        os.environ.setdefault(name, str(capacity))
    return {name: os.environ[name] for name in KERNEL_CACHE_CAPACITIES}


@contextlib.contextmanager
def loading_allocations():
    """While a model loads, every allocation of 1 MiB or more gets its own mapping, which goes
    back to the system when freed. Afterwards: the thresholds glibc's adaptive scheme ends at
    once it has seen large buffers come and go (32 MiB, trim at 64 MiB), so decoding and
    inference buffers keep being reused from the heap (mapping them fresh each time costs page
    faults), and the heap's free pages go back to the system. No-op where libc is not glibc."""
    try:
        libc = _glibc()
        libc.mallopt(M_MMAP_THRESHOLD, 1 << 20)
    except (OSError, AttributeError):
        yield
        return
    try:
        yield
    finally:
        libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)
        libc.mallopt(M_TRIM_THRESHOLD, 64 << 20)
        libc.malloc_trim(0)
