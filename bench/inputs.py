"""What the clients send: real photos (scikit-image's sample photos, cropped to 4:3 or 3:4,
resized with PIL to 0.1-12 megapixels, given a light sensor-like grain (sigma 2 of 255) so that
their JPEG entropy, file size and decode time are those of camera photos rather than of smooth
upscales, then JPEG quality 90; cached on disk) and realistic captions
of varied lengths (all within CLIP's 77 tokens: the reference container fails on longer ones)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

# (width, height) for landscape sources; portrait sources get the transpose.
SIZES = [(400, 300), (1024, 768), (2000, 1500), (4000, 3000)]
QUICK_SIZES = [(400, 300), (1024, 768)]
# scikit-image photos bundled with the package (no download); rocket is served portrait.
GRAIN = 2.0  # std of the added noise, in 8-bit levels: a 12 MP photo then decodes in ~145 ms, like a camera JPEG
SOURCES = {"astronaut": False, "coffee": False, "chelsea": False, "rocket": True}

CAPTIONS = [
    "a dog",
    "red sneakers",
    "a cup of coffee on a wooden table",
    "an astronaut in a white spacesuit holding a helmet",
    "a tabby cat sitting on a windowsill looking outside",
    "a rocket on the launch pad before lift-off at dawn",
    "Vintage leather armchair, brown, good condition, pick-up only",
    "Sunset over the mountains with a lake in the foreground and pine trees along the shore",
    "Two children playing football in a park on a sunny afternoon while their parents watch from a bench",
    "Product photo: stainless steel kettle, 1.7 L, cordless, with blue LED indicator and auto shut-off",
    "A bowl of ramen with sliced pork, a soft-boiled egg, green onions and nori",
    "city skyline at night",
    "Close-up of a honeybee collecting pollen from a yellow sunflower in the garden",
    "A vintage red car parked on a cobblestone street in an old European town, early morning light",
    "handmade ceramic mug",
    "Black and white portrait of an elderly fisherman with a weathered face and a knitted cap",
    "A modern kitchen with white cabinets, marble countertops, and a large window overlooking a garden",
    "snowy forest path",
    "Aerial view of a winding river through green farmland with small villages scattered along its banks",
    "A golden retriever puppy chewing on a blue rope toy on the living room carpet",
    "Men's waterproof hiking jacket, navy blue, size L, breathable membrane, adjustable hood",
    "street food market",
    "A laptop, a notebook and a cup of tea on a desk next to a window on a rainy day",
    "Fresh croissants and baguettes displayed in the window of a small Parisian bakery",
]


@dataclass(frozen=True)
class Photo:
    name: str
    width: int
    height: int
    data: bytes  # JPEG

    @property
    def megapixels(self) -> float:
        return self.width * self.height / 1e6


def _source_image(name: str, portrait: bool):
    from PIL import Image
    from skimage import data

    image = Image.fromarray(getattr(data, name)()).convert("RGB")
    w, h = image.size
    aspect = 3 / 4 if portrait else 4 / 3
    if w / h > aspect:  # too wide: crop the sides
        cw, ch = round(h * aspect), h
    else:
        cw, ch = w, round(w / aspect)
    left, top = (w - cw) // 2, (h - ch) // 2
    return image.crop((left, top, left + cw, top + ch))


def _grain(image, seed: int):
    import numpy as np
    from PIL import Image

    pixels = np.asarray(image).astype(np.int16)
    noise = np.random.default_rng(seed).normal(0.0, GRAIN, pixels.shape).round().astype(np.int16)
    return Image.fromarray(np.clip(pixels + noise, 0, 255).astype(np.uint8))


def photos(cache: Path, quick: bool = False) -> list[Photo]:
    """The photo set, ordered so consecutive requests cycle through sizes."""
    from PIL import Image

    folder = cache / "photos"
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for size in QUICK_SIZES if quick else SIZES:
        for name, portrait in SOURCES.items():
            w, h = (size[1], size[0]) if portrait else size
            path = folder / f"{name}_{w}x{h}_g{GRAIN:g}_q90.jpg"
            if not path.is_file():
                image = _grain(_source_image(name, portrait).resize((w, h), Image.BICUBIC), seed=w * h)
                tmp = path.with_suffix(".tmp")
                image.save(tmp, format="JPEG", quality=90)
                tmp.replace(path)
            out.append(Photo(path.stem, w, h, path.read_bytes()))
    # interleave sizes: astronaut 400, coffee 1024, chelsea 2000, rocket 4000, astronaut 1024, ...
    n_sizes = len(QUICK_SIZES if quick else SIZES)
    n_src = len(SOURCES)
    order = sorted(range(len(out)), key=lambda i: ((i % n_src - i // n_src) % n_sizes, i))
    return [out[i] for i in order]


def captions(quick: bool = False) -> list[str]:
    return CAPTIONS[:8] if quick else list(CAPTIONS)


def prepared_batch(embedder, modality: str, batch: int) -> list:
    """``batch`` prepared inputs for timing a model alone: the captions in turn, or seeded random
    pixels of the embedder's image size (the forward pass's speed does not depend on their values)."""
    import torch

    if modality == "text":
        return [embedder.prepare("text", CAPTIONS[i % len(CAPTIONS)]) for i in range(batch)]
    generator = torch.Generator().manual_seed(batch)
    return [torch.randn(3, embedder.image_size, embedder.image_size, generator=generator) for _ in range(batch)]


def digest(items) -> str:
    h = hashlib.sha256()
    for item in items:
        h.update(item if isinstance(item, bytes) else item.encode())
    return h.hexdigest()[:16]
