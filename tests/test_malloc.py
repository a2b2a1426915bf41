"""glibc keeps a pass's large activations mapped for the next pass (handspring_models.runtime.malloc)."""

import subprocess
import sys

import pytest

import handspring_models

from handspring_models.runtime import malloc

pytestmark = pytest.mark.skipif(not malloc.is_glibc(), reason="glibc's malloc only")

# Passes of three live 20 MB activations, as an MLP layer holds for 32 texts; the page faults of the
# last four passes, in a fresh process (mallopt is process-wide).
PASSES = """
import resource, sys, torch
from handspring_models.runtime import malloc
if sys.argv[1] == "keep":
    assert malloc.keep_freed_buffers()
else:  # glibc's starting threshold, held there (its adaptive raise depends on what came before)
    import ctypes
    assert ctypes.CDLL(None).mallopt(malloc.M_MMAP_THRESHOLD, 128 << 10)
faults = []
for _ in range(8):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    live = [torch.empty(5 << 20).fill_(1.0) for _ in range(3)]
    del live
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(sum(faults[4:]))
"""


def late_faults(mode: str) -> int:
    done = subprocess.run([sys.executable, "-c", PASSES, mode], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return int(done.stdout.strip())


def test_later_passes_reuse_the_first_ones_memory():
    pages = 3 * (20 << 20) // 4096  # one pass's activations, in 4 KB pages
    assert late_faults("keep") < pages // 10
    # at glibc's starting threshold they are mapped and faulted in again on every pass
    assert late_faults("mapped") > pages


def test_loading_a_torch_model_keeps_freed_buffers(tiny_weights, monkeypatch):
    calls = []
    monkeypatch.setattr(malloc, "keep_freed_buffers", lambda: calls.append("applied"))
    handspring_models.load("clip_vit_b_32", weights_dir=tiny_weights)
    assert calls == ["applied"]
