"""Inputs the decoder fuzzer (tests/fuzz) found mishandled, rebuilt here byte for byte from the
seed files they were mutated from. Each must now prepare or raise InvalidInputError."""

from __future__ import annotations

import pytest

from handspring_models.errors import InvalidInputError
from handspring_models.video import preprocess_video
from tests.fuzz.seeds import _video


def test_video_stream_without_a_codec_description_is_invalid_input():
    # An MP4 cut inside its handler box and followed by the file again from its media data:
    # the track has no sample description (stsd), so PyAV gives the stream no codec context.
    # Was: AttributeError on None.width.
    mp4 = _video("mp4", "mpeg4")
    cut, resume = mp4.index(b"vide") + 5, mp4.index(b"mdat") + 4
    with pytest.raises(InvalidInputError, match="no decoder"):
        preprocess_video(mp4[:cut] + mp4[resume:])
