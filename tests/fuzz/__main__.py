"""Fuzz the decoders: ``python -m tests.fuzz --modality audio --seconds 300``.

Every input must end in a prepared tensor of the documented shape or ``InvalidInputError``.
Another exception fails the run (hypothesis shrinks it and prints the smallest input); an input
still running after ``--hang-seconds`` dumps every thread's stack and ends the process (exit 1);
a crash kills it. Either way ``--last-input`` then holds the bytes that did it. Exit status 0
means the property held for every input.
"""

from __future__ import annotations

import argparse
import collections
import faulthandler
import sys
import time
from pathlib import Path

import torch
from hypothesis import HealthCheck, Phase, given, seed, settings

from tests.fuzz.mutations import inputs
from tests.fuzz.seeds import SEEDS
from tests.fuzz.targets import MODALITIES, Target, tiny_weights


def _arguments(argv):
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__.split("\n")[0])
    parser.add_argument("--modality", action="append", choices=MODALITIES, help="repeatable; default: all")
    budget = parser.add_mutually_exclusive_group()
    budget.add_argument("--examples", type=int, help="examples per modality (one hypothesis run)")
    budget.add_argument("--seconds", type=float, help="keep fuzzing each modality this long, in rounds")
    parser.add_argument("--seed", type=int, default=0, help="first round's seed (rounds count up)")
    parser.add_argument("--derandomize", action="store_true", help="CI: the same examples every run")
    parser.add_argument("--weights", type=Path, help="a tiny ImageBind weights folder (default: build one)")
    parser.add_argument("--hang-seconds", type=float, default=60.0, help="one input's bound before it counts as a hang")
    parser.add_argument("--last-input", type=Path, help="each input is written here first (crash reproducer)")
    parser.add_argument("--failures", type=Path, help="folder for the smallest failing inputs")
    return parser.parse_args(argv)


class Runner:
    def __init__(self, target: Target, args):
        self.target, self.args = target, args
        self.outcomes = collections.Counter()
        self.reasons = collections.Counter()  # how far inputs got: the refusals, by their first words
        self.slowest = (0.0, b"")
        self.failures: dict[str, bytes] = {}  # one per kind of failure; the last seen is hypothesis' smallest

    def one(self, data: bytes) -> None:
        if self.args.last_input:
            self.args.last_input.write_bytes(data)
        faulthandler.dump_traceback_later(self.args.hang_seconds, exit=True)
        start = time.perf_counter()
        try:
            outcome = self.target(data)
            self.outcomes["ok" if outcome == "ok" else "invalid"] += 1
            if outcome != "ok":
                self.reasons[" ".join(outcome.split(":")[0].split()[:6])] += 1
        except BaseException as e:
            self.outcomes["failed"] += 1
            self.failures[f"{type(e).__name__}: {str(e)[:120]}"] = data
            raise
        finally:
            faulthandler.cancel_dump_traceback_later()
            took = time.perf_counter() - start
            if took > self.slowest[0]:
                self.slowest = (took, data)

    def round(self, examples: int, round_seed: int) -> BaseException | None:
        config = settings(max_examples=examples, deadline=None, database=None, derandomize=self.args.derandomize,
                          suppress_health_check=list(HealthCheck), print_blob=True,
                          phases=[Phase.explicit, Phase.generate, Phase.shrink])

        @config
        @given(inputs(SEEDS[self.target.modality]()))
        def property_holds(data):
            self.one(data)

        if not self.args.derandomize:
            property_holds = seed(round_seed)(property_holds)
        try:
            property_holds()
        except Exception as e:  # noqa: BLE001 -- reported below, the run goes on to other rounds
            return e
        return None


def fuzz(modality: str, weights: Path, args) -> bool:
    runner = Runner(Target(modality, weights), args)
    start = time.monotonic()
    rounds = errors = 0
    while True:
        examples = args.examples or 200
        error = runner.round(examples, args.seed + rounds)
        rounds += 1
        if error is not None:
            errors += 1
            print(f"[{modality}] round {rounds}: property failed:\n{error!r}", flush=True)
        if args.seconds is None or time.monotonic() - start > args.seconds:
            break
    took = time.monotonic() - start
    counts = ", ".join(f"{k} {v}" for k, v in sorted(runner.outcomes.items()))
    print(f"[{modality}] {sum(runner.outcomes.values())} inputs in {rounds} round(s), {took:.1f} s: {counts}; "
          f"slowest {runner.slowest[0]:.2f} s ({len(runner.slowest[1])} bytes)", flush=True)
    top = "; ".join(f"{reason} ({n})" for reason, n in runner.reasons.most_common(8))
    print(f"[{modality}] most common refusals: {top}", flush=True)
    for n, (kind, data) in enumerate(runner.failures.items()):
        print(f"[{modality}] failure: {kind}\n    smallest input ({len(data)} bytes): {data[:300]!r}", flush=True)
        if args.failures:
            args.failures.mkdir(parents=True, exist_ok=True)
            (args.failures / f"{modality}-{n}.bin").write_bytes(data)
    return errors == 0


def main(argv=None) -> int:
    args = _arguments(argv)
    torch.set_num_threads(1)  # like the server's decoding threads; and no thread teams to wait on
    faulthandler.enable()
    if args.last_input:
        args.last_input.parent.mkdir(parents=True, exist_ok=True)
    weights = args.weights or tiny_weights()
    modalities = args.modality or list(MODALITIES)
    budget = f"{args.examples} examples" if args.examples else f"{args.seconds or 'one round of 200 examples'} s"
    print(f"fuzzing {', '.join(modalities)}: {budget} each, seed {args.seed}"
          f"{' (derandomized)' if args.derandomize else ''}, hang bound {args.hang_seconds:g} s", flush=True)
    results = [fuzz(modality, weights, args) for modality in modalities]
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
