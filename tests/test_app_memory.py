import json
import platform
import subprocess
import sys

import pytest

from tests.conftest import REPO

ENV = {"PATH": "/usr/bin:/bin"}


def run(code, *args, env=ENV, timeout=120):
    done = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, env=env, capture_output=True,
                          text=True, check=False, timeout=timeout)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_arenas_are_capped_on_glibc():
    assert run("from app.memory import limit_malloc_arenas; print(limit_malloc_arenas())") == "True"


def test_an_explicit_malloc_arena_max_is_left_alone():
    code = "from app.memory import limit_malloc_arenas; print(limit_malloc_arenas())"
    assert run(code, env={**ENV, "MALLOC_ARENA_MAX": "4"}) == "False"


BOUND = "import json; from app.memory import bound_kernel_caches; print(json.dumps(bound_kernel_caches()))"


def test_kernel_caches_are_bounded_by_default():
    assert json.loads(run(BOUND)) == {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "128", "LRU_CACHE_CAPACITY": "16"}


def test_explicit_kernel_cache_sizes_are_left_alone():
    values = json.loads(run(BOUND, env={**ENV, "ONEDNN_PRIMITIVE_CACHE_CAPACITY": "1024"}))
    assert values == {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "1024", "LRU_CACHE_CAPACITY": "16"}


# A linear layer packed for oneDNN (fp32) runs at 200 row counts (more than the bounded cache holds), then at
# 100 smaller ones; prints how much anonymous memory (MiB) those last 100 added. (Smaller, so that
# the memory of evicted primitives can hold them: the heap does not compact.)
SHAPES = """
import sys
from app.memory import bound_kernel_caches
if sys.argv[1] == "bounded":
    bound_kernel_caches()
import torch
from handspring_models.runtime.kernels import linear, onednn_pack as pack, packing_available
if not packing_available():
    print("unavailable"); raise SystemExit
torch.set_num_threads(1)
def anon():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("RssAnon")) / 1024
weight, bias = pack(torch.randn(2048, 512)), torch.randn(2048)
with torch.inference_mode():
    for rows in range(600, 400, -1):
        linear(torch.randn(rows, 512), weight, bias)
    before = anon()
    for rows in range(400, 300, -1):
        linear(torch.randn(rows, 512), weight, bias)
print(anon() - before)
"""


def grown_mib(mode):
    out = run(SHAPES, mode, timeout=300)
    if out == "unavailable":
        pytest.skip("no oneDNN weight packing in this torch build")
    return float(out)


def test_bounded_kernel_caches_stop_growing_with_new_shapes():
    # Unbounded, every row count keeps its primitive: ~56 MB for these 100. Bounded: 0-3 MB.
    assert grown_mib("unbounded") > 30
    assert grown_mib("bounded") < 15


GLIBC_MAPPED = """
import ctypes, sys
from app.memory import loading_allocations
libc = ctypes.CDLL("libc.so.6")
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
libc.mallinfo2.restype = Info
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
def mapped_by(size):
    before = libc.mallinfo2().hblkhd
    block = libc.malloc(size)
    grown = libc.mallinfo2().hblkhd - before
    libc.free(block)
    return grown >= size
with loading_allocations():
    during = mapped_by(2 << 20)
print(during, mapped_by(2 << 20), mapped_by(40 << 20))
"""


def test_loading_maps_large_allocations_and_the_service_then_reuses_the_heap():
    libc, version = platform.libc_ver()
    if libc != "glibc" or tuple(map(int, version.split("."))) < (2, 33):
        pytest.skip("needs glibc 2.33+ (mallinfo2)")
    # While loading, 2 MiB gets its own mapping (returned on free); afterwards it comes from the
    # heap, and only allocations over 32 MiB are mapped.
    assert run(GLIBC_MAPPED) == "True False True"
