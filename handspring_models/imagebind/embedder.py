"""ImageBind features: the same two-step interface as CLIP's, for seven input kinds.

Images and videos share the vision tower (one ``vision`` weight file); every other modality has
its own. Outputs are unit vectors by default; ``normalize=False`` gives the reference model's
raw outputs instead (normalized, then scaled per modality: text by its learned scale, audio x20,
thermal x10, depth and IMU x5; audio and video averaged over their clips).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..clip.embedder import end_of_text_ids, pad_causal
from ..embedder import Embedder
from ..errors import InvalidInputError
from ..inputs.image import DEFAULT_MAX_PIXELS
from .model import ImageBind, ImageBindConfig

MAX_CLIPS_PER_PASS = 32
# What preprocessing makes of one file (handspring_models.video and .audio, which load FFmpeg, so
# they are not imported for their constants): 5 clips x 3 crops of a video, 3 clips of an audio.
VIDEO_CLIPS, VIDEO_CROPS, AUDIO_CLIPS = 5, 3, 3
DEFAULT_MAX_SECONDS = 600.0  # audio and video: the whole file is decoded (audio) or indexed (video)


class ImageBindEmbedder(Embedder):
    RAW_OUTPUT = ("the reference model's raw outputs: L2-normalized, then scaled per modality "
                  "(text by its learned scale, audio x20, thermal x10, depth and imu x5), "
                  "audio and video averaged over their clips")

    def __init__(self, spec, feature: str, modalities: tuple[str, ...], folder, precision: str = "fp32",
                 max_pixels: int = DEFAULT_MAX_PIXELS, normalize: bool | None = None,
                 max_seconds: float = DEFAULT_MAX_SECONDS, backend: str = "torch"):
        self.max_seconds = max_seconds  # longest audio or video accepted
        super().__init__(spec, feature, modalities, folder, precision, max_pixels, normalize, backend)

    def _read_architecture(self, architecture: dict) -> None:
        self.config = ImageBindConfig.from_dict(architecture)
        self.dim = self.config.embed_dim
        self.image_size = self.config.image_size
        self.context_length = self.config.context_length

    LOOKUP_TABLES = {"text": ("modality_preprocessors.text.token_embedding.weight",)}

    def _build_model(self) -> torch.nn.Module:
        return ImageBind(self.config, modalities=self._components())

    def _adjust_state(self, state: dict[str, torch.Tensor]) -> None:
        # The output scales multiply every vector: keep them in float32 whatever the precision.
        for key, tensor in state.items():
            if key.endswith("log_logit_scale"):
                state[key] = tensor.float()

    # ------------------------------------------------------------ two-step interface

    def _prepared_shape(self, modality: str) -> tuple[int, ...]:
        s, c = self.image_size, self.config
        return {
            "image": (3, s, s),
            "video": (VIDEO_CLIPS * VIDEO_CROPS, 3, c.video_frames, s, s),
            "audio": (AUDIO_CLIPS, 1, c.mel_bins, c.audio_frames),
            "depth": (1, s, s),
            "thermal": (1, s, s),
            "imu": (c.imu_channels, c.imu_samples),
        }[modality]

    def prepare(self, modality: str, item, max_seconds: float | None = None) -> torch.Tensor:
        """One raw input -> model input. Text: a string -> token ids. Every other modality: the
        encoded file's bytes (an image may also be a PIL image) -> a float tensor:
        image [3, 224, 224], video [15, 3, 2, 224, 224], audio [3, 1, 128, 204],
        depth/thermal [1, 224, 224], imu [6, 2000]. ``max_seconds`` lowers the embedder's own
        limit on an audio or video's length for this one input."""
        self.require(modality)
        max_seconds = self.max_seconds if max_seconds is None else min(max_seconds, self.max_seconds)
        if modality == "text":
            return end_of_text_ids(self.tokenizer, item)
        if modality == "image":
            return self._image_pixels(item)
        if not isinstance(item, (bytes, bytearray, memoryview)):
            raise InvalidInputError(f"{modality} input must be the bytes of a file, not {type(item).__name__}")
        data = bytes(item)
        # Imported on first use: PyAV loads FFmpeg, which a text- or image-only server never needs.
        if modality == "audio":
            from ..inputs.audio import preprocess_audio

            return preprocess_audio(data, max_seconds=max_seconds)
        if modality == "video":
            from ..inputs.video import preprocess_video

            return preprocess_video(data, max_seconds=max_seconds)  # its own frame-size cap (2x 4K)
        from ..inputs import sensors

        if modality == "depth":
            return sensors.preprocess_depth(data, max_pixels=self.max_pixels)
        if modality == "thermal":
            return sensors.preprocess_thermal(data, max_pixels=self.max_pixels)
        return sensors.preprocess_imu(data)

    def _forward(self, modality: str, prepared: Sequence[torch.Tensor]) -> torch.Tensor:
        """[n, 1024]: unit vectors after ``finish`` unless ``normalize=False``."""
        if modality == "text":
            return self.model.encode_text(*pad_causal(prepared, self.context_length))
        # A video is 15 clips, an audio file 3: chunk so one pass holds at most ~MAX_CLIPS of them
        # (activation memory grows with clips, and larger passes are no faster).
        per_item = prepared[0].shape[0] if modality in ("video", "audio") else 1
        step = max(1, MAX_CLIPS_PER_PASS // per_item)
        return torch.cat([self.model.encode(self.spec.components[modality], torch.stack(list(prepared[i:i + step])).to(self.dtype))
                          for i in range(0, len(prepared), step)])

    def warmup(self) -> None:
        """One small forward per tower, so the first request does not pay oneDNN's kernel selection.
        Video warms the vision tower with one frame pair rather than 15 clips."""
        s, c = self.image_size, self.config
        dummies = {
            "image": torch.zeros(3, s, s),
            "video": torch.zeros(1, 3, c.video_frames, s, s),
            "audio": torch.zeros(1, 1, c.mel_bins, c.audio_frames),
            "depth": torch.zeros(1, s, s),
            "thermal": torch.zeros(1, s, s),
            "imu": torch.zeros(c.imu_channels, c.imu_samples),
        }
        done = set()
        for modality in self.modalities:
            if self.spec.components[modality] in done:
                continue
            done.add(self.spec.components[modality])
            if modality == "text":
                self.encode("text", [self.prepare("text", "warm up")])
            else:
                self.encode(modality, [dummies[modality]])

    # ------------------------------------------------------------ convenience (as CLIP's)

    def embed_audio(self, files: Sequence[bytes]) -> np.ndarray:
        """Audio files (WAV, FLAC, MP3, OGG...) as bytes -> [n, 1024]."""
        return self.embed("audio", files)

    def embed_videos(self, files: Sequence[bytes]) -> np.ndarray:
        """Video files (MP4, WebM, AVI...) as bytes -> [n, 1024]."""
        return self.embed("video", files)

    def embed_depth(self, images: Sequence[bytes]) -> np.ndarray:
        """Single-channel depth (disparity) images as bytes -> [n, 1024]."""
        return self.embed("depth", images)

    def embed_thermal(self, images: Sequence[bytes]) -> np.ndarray:
        """Single-channel thermal images as bytes -> [n, 1024]."""
        return self.embed("thermal", images)

    def embed_imu(self, files: Sequence[bytes]) -> np.ndarray:
        """IMU CSV files (header row; gyro x,y,z then accel x,y,z) as bytes -> [n, 1024]."""
        return self.embed("imu", files)
