"""The ImageBind fidelity cases, shared by the tests and by the script that made their golden
outputs with the reference (tests/data/make_imagebind_golden.py): architectures, the seed of
their random weights, and seeded model inputs. Everything here is regenerated bit for bit from
the seeds with the pinned torch, so only the reference's outputs need to be stored."""

from __future__ import annotations

import torch

from handspring_models.imagebind.model import ImageBindConfig, TrunkConfig

WEIGHTS_SEED = 0
INPUTS_SEED = 1

TINY = ImageBindConfig(
    embed_dim=32, vision=TrunkConfig(64, 2, 4), text=TrunkConfig(64, 2, 4), audio=TrunkConfig(48, 2, 4),
    depth=TrunkConfig(32, 2, 4), thermal=TrunkConfig(48, 2, 4), imu=TrunkConfig(32, 2, 4),
)
HUGE = ImageBindConfig()

# Texts for the text tower: plain, empty, over-long (cut at 77), a typed end-of-text token.
TEXTS = [
    "a dog playing in the snow",
    "",
    "the quick brown fox " * 30,
    "before <|endoftext|> after",
]


def reference_kwargs(cfg: ImageBindConfig) -> dict:
    """The reference's ImageBindModel(...) arguments for a config."""
    kw = {"out_embed_dim": cfg.embed_dim}
    for m in ("vision", "text", "audio", "depth", "thermal", "imu"):
        t = cfg.trunk(m)
        kw.update({f"{m}_embed_dim": t.width, f"{m}_num_blocks": t.layers, f"{m}_num_heads": t.heads})
    return kw


def model_inputs(cfg: ImageBindConfig, video_clips: int) -> dict[str, torch.Tensor]:
    """Preprocessed-shape inputs for every non-text modality, two items each; video as
    [1, clips, 3, 2, 224, 224], audio as [2, 3, 1, 128, 204] (multi-clip paths)."""
    g = torch.Generator().manual_seed(INPUTS_SEED)
    s = cfg.image_size
    return {
        "vision": torch.randn(2, 3, s, s, generator=g),
        "video": torch.randn(1, video_clips, 3, cfg.video_frames, s, s, generator=g),
        "audio": torch.randn(2, 3, 1, cfg.mel_bins, cfg.audio_frames, generator=g),
        "depth": torch.randn(2, 1, s, s, generator=g),
        "thermal": torch.randn(2, 1, s, s, generator=g),
        "imu": torch.randn(2, cfg.imu_channels, cfg.imu_samples, generator=g),
    }


CASES = {"tiny": (TINY, 15), "huge": (HUGE, 2)}  # config, video clips (15 = the real count)
