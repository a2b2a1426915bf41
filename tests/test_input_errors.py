"""The library's error contract: a defect of the bytes is InvalidInputError; a fault of the machine
(memory, file descriptors, disk) propagates unchanged, wherever in decoding it happens."""

from __future__ import annotations

import errno

import av
import PIL.Image
import PIL.ImageFile
import pytest

from handspring_models.inputs import audio
from handspring_models.inputs import video
from handspring_models.inputs.audio import preprocess_audio
from handspring_models.errors import InvalidInputError, is_machine_fault
from handspring_models.inputs.image import decode_image
from handspring_models.inputs.sensors import preprocess_depth
from handspring_models.inputs.video import preprocess_video
from tests import media
from tests.conftest import encode
from tests.fuzz.seeds import webm

FAULTS = {
    "MemoryError": lambda: MemoryError(),
    "EMFILE": lambda: OSError(errno.EMFILE, "Too many open files"),
    "ENOSPC": lambda: OSError(errno.ENOSPC, "No space left on device"),
    "PyAV EMFILE": lambda: av.error.OSError(errno.EMFILE, "Too many open files"),
}


def _raiser(fault):
    def fail(*args, **kwargs):
        raise fault
    return fail


# (what is prepared, the decoder function made to fail, the call that prepares)
SITES = {
    "image open": (PIL.Image, "open", lambda: decode_image(encode(PIL.Image.new("RGB", (40, 30)), "PNG"))),
    "image load": (PIL.ImageFile.ImageFile, "load", lambda: decode_image(encode(PIL.Image.new("RGB", (40, 30)), "PNG"))),
    "depth load": (PIL.ImageFile.ImageFile, "load", lambda: preprocess_depth(media.gray_png(mode="I;16"))),
    "audio open": (av, "open", lambda: preprocess_audio(media.wav(0.5))),
    "audio frames": (audio, "_frame_channels", lambda: preprocess_audio(media.wav(0.5))),
    "video open": (av, "open", lambda: preprocess_video(media.video(1.0))),
    "video frames": (video, "frame_to_rgb", lambda: preprocess_video(media.video(1.0))),
}


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("site", list(SITES))
def test_a_fault_of_the_machine_propagates_unchanged(monkeypatch, site, fault):
    owner, name, prepare = SITES[site]
    error = FAULTS[fault]()
    monkeypatch.setattr(owner, name, _raiser(error))
    with pytest.raises(BaseException) as caught:
        prepare()
    assert caught.value is error


def _truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


DEFECTS = {
    "truncated PNG": (decode_image, lambda: _truncated(encode(media_photo(), "PNG"))),
    "truncated JPEG": (decode_image, lambda: _truncated(encode(media_photo(), "JPEG"))),
    "garbage image": (decode_image, lambda: b"\x89PNG\r\n\x1a\n" + b"\xff" * 300),
    "truncated 16-bit depth": (preprocess_depth, lambda: _truncated(media.gray_png(mode="I;16"))),
    "garbage audio": (preprocess_audio, lambda: bytes(range(256)) * 8),
    "WAV with a broken header": (preprocess_audio, lambda: media.wav(0.5)[:20] + b"\xff" * 24 + media.wav(0.5)[44:]),
    "truncated MP4": (preprocess_video, lambda: _truncated(media.video(1.0))),
    # FFmpeg's Matroska demuxer says "Input/output error" (EIO) when the bytes run out.
    "truncated WebM": (preprocess_video, lambda: webm()[:300]),
}


def media_photo():
    from tests.conftest import sample_photos

    return sample_photos()["chelsea_rgb_451x300"]


@pytest.mark.parametrize("name", list(DEFECTS))
def test_a_defect_of_the_bytes_is_invalid_input(name):
    prepare, make = DEFECTS[name]
    with pytest.raises(InvalidInputError):
        prepare(make())


@pytest.mark.parametrize("error", [
    PIL.UnidentifiedImageError("cannot identify image file"),
    OSError("image file is truncated (3 bytes not processed)"),
    av.error.InvalidDataError(-1094995529, "Invalid data found when processing input"),
    av.error.OSError(errno.EIO, "Input/output error"),
    # FFmpeg refuses allocations over 2 GiB with ENOMEM: a header lying about a count.
    av.error.MemoryError(errno.ENOMEM, "Cannot allocate memory"),
    ValueError("bad header"),
], ids=type)
def test_decoder_errors_about_the_bytes_are_not_machine_faults(error):
    assert not is_machine_fault(error)


@pytest.mark.parametrize("error", [
    MemoryError(), OSError(errno.EIO, "Input/output error"), OSError(errno.ENFILE, "Too many open files in system"),
    OSError(errno.ENOMEM, "Cannot allocate memory"), av.error.OSError(errno.EMFILE, "Too many open files"),
], ids=repr)
def test_resource_and_io_errors_are_machine_faults(error):
    assert is_machine_fault(error)
