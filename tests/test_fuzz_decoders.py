"""The decoders under a short, repeatable fuzzing run (``make fuzz`` runs longer): every input
prepares to the documented tensor or raises InvalidInputError; no other exception, crash or hang.

Each modality runs in its own process, so a crash in native code fails its test instead of
ending the test session; the runner's own watchdog turns a hang into a failure with stacks."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO

# Inputs per modality: a few seconds each on 2 cores (audio and video cost ~50-100 ms an input).
EXAMPLES = {"image": 300, "depth": 150, "thermal": 100, "audio": 150, "video": 200, "imu": 200}
HANG_SECONDS = 60


@pytest.mark.fuzz
@pytest.mark.parametrize("modality", list(EXAMPLES))
def test_fuzzed_inputs_prepare_or_are_invalid(modality, imagebind_tiny_weights, tmp_path):
    last = tmp_path / "last-input.bin"
    command = [sys.executable, "-m", "tests.fuzz", "--modality", modality, "--examples", str(EXAMPLES[modality]),
               "--derandomize", "--weights", str(imagebind_tiny_weights), "--hang-seconds", str(HANG_SECONDS),
               "--last-input", str(last)]
    run = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, (f"exit {run.returncode}; last input: {last.read_bytes()[:200]!r}\n"
                                 f"{run.stdout[-6000:]}\n{run.stderr[-6000:]}")


@pytest.mark.fuzz
def test_an_input_past_the_hang_bound_ends_the_run_with_stacks_and_its_bytes(imagebind_tiny_weights, tmp_path):
    # A bound no video can meet stands in for a hang: the watchdog must fire, not the test's timeout.
    last = tmp_path / "last-input.bin"
    command = [sys.executable, "-m", "tests.fuzz", "--modality", "video", "--examples", "5", "--derandomize",
               "--weights", str(imagebind_tiny_weights), "--hang-seconds", "0.001", "--last-input", str(last)]
    run = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode != 0 and "Timeout" in run.stderr and "most recent call first" in run.stderr
    assert last.stat().st_size > 0
