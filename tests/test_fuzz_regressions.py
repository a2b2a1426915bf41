"""Inputs the decoder fuzzer (tests/fuzz) found mishandled, rebuilt here byte for byte from the
seed files they were mutated from. Each must now prepare or raise InvalidInputError."""

from __future__ import annotations

import struct

import pytest

from handspring_models.errors import InvalidInputError
from handspring_models.inputs.video import preprocess_video
from tests import media
from tests.fuzz.seeds import _video


def test_video_stream_without_a_codec_description_is_invalid_input():
    # An MP4 cut inside its handler box and followed by the file again from its media data:
    # the track has no sample description (stsd), so PyAV gives the stream no codec context.
    # Was: AttributeError on None.width.
    mp4 = _video("mp4", "mpeg4")
    cut, resume = mp4.index(b"vide") + 5, mp4.index(b"mdat") + 4
    with pytest.raises(InvalidInputError, match="no decoder"):
        preprocess_video(mp4[:cut] + mp4[resume:])


def test_video_whose_sample_table_claims_2_to_the_31_entries_is_invalid_input():
    # FFmpeg refuses the 16 GiB table with ENOMEM (av.error.MemoryError, a MemoryError) while
    # reading the header; the machine has memory to spare. Was: MemoryError, i.e. a server fault.
    mp4 = media.video(1.0, fps=5, width=32, height=24)
    count = mp4.index(b"stts") + 8  # after the box's type, version and flags
    with pytest.raises(InvalidInputError, match="Cannot allocate memory"):
        preprocess_video(mp4[:count] + struct.pack(">I", 0x7FFFFFFF) + mp4[count + 4:])
