"""Where ImageBind's clips sit in a recording (shared by audio and video preprocessing).

ImageBind asks pytorchvideo's ``ConstantClipsPerVideoSampler`` for clips until it says "last".
With the sampler as pinned by ImageBind (pytorchvideo 6cdc929, after its April 2022 fix) that
is always exactly ``count`` clips: start ``i * max_start / max(count - 1, 1)`` for i in
0..count-1, where ``max_start = max(duration - clip_seconds, 0)``, each ``clip_seconds`` long.
Recordings shorter than a clip get ``count`` identical clips at 0 (ends past the data; callers
slice, so they get what is there).

The arithmetic is exact (``Fraction``), except one step we keep on purpose: the sampler
subtracts in float (``float - Fraction`` is float in Python), so ``max_start`` is the exact
value of the float ``duration - clip_seconds``, not of the real difference.
"""

from __future__ import annotations

from fractions import Fraction


def clip_spans(duration: float, clip_seconds: float, count: int) -> list[tuple[Fraction, Fraction]]:
    """``count`` (start, end) pairs in seconds, as exact fractions, in playback order."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    clip = Fraction(clip_seconds)
    # float(duration) - float(clip), as the sampler computes it, then exactly.
    max_start = Fraction(max(float(duration) - float(clip), 0))
    step = max_start / max(count - 1, 1)
    return [(step * i, step * i + clip) for i in range(count)]
