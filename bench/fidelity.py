"""Fidelity: how close each precision's vectors are to fp32's, and fp32's to the reference.

On the benchmark's own photos (every size) and captions:
- ``vs_fp32``: each precision against Handspring fp32, end to end (bytes/text -> vector);
- ``vs_transformers``: Handspring at each precision against the reference pipeline (PIL decode,
  RGB, ``CLIPProcessor``, transformers ``CLIPModel`` fp32, one input at a time), end to end;
- ``model_vs_transformers``: the models alone, fed the very same ``CLIPProcessor`` pixels and
  token ids (so preprocessing conventions play no part);
- ``service`` (filled in by the server phase): each Handspring server's answers against the
  reference server's answers to the same requests.
"""

from __future__ import annotations

import io

import numpy as np
import torch

from . import inputs as bench_inputs


def cosines(a, b) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def summary(a, b, names: list[str]) -> dict:
    c = cosines(a, b)
    i = int(np.argmin(c))
    return {"min_cos": float(c.min()), "mean_cos": float(c.mean()), "worst": names[i], "n": len(c)}


def compare(ours: dict, ref: dict, text_names: list[str], image_names: list[str]) -> dict:
    return {"text": summary(ours["text"], ref["text"], text_names),
            "image": summary(ours["image"], ref["image"], image_names)}


def run(ckpt, precisions: list[str], cache, quick: bool, log=print) -> dict:
    from PIL import Image
    from transformers import CLIPModel, CLIPProcessor

    import handspring_models

    photos = bench_inputs.photos(cache, quick)
    captions = bench_inputs.captions(quick)
    image_names = [p.name for p in photos]
    text_names = captions

    hf = CLIPModel.from_pretrained(ckpt.hf_dir).eval()
    processor = CLIPProcessor.from_pretrained(ckpt.hf_dir)
    ref_pixels, ref_tokens = [], []
    ref = {"text": [], "image": []}
    with torch.no_grad():
        for text in captions:
            tok = processor(text=[text], return_tensors="pt", padding=True)
            ref_tokens.append(tok["input_ids"][0])
            e = hf.text_projection(hf.text_model(**tok)[1])
            ref["text"].append((e / e.norm(dim=-1, keepdim=True))[0].numpy())
        for ph in photos:
            image = Image.open(io.BytesIO(ph.data))
            image = image if image.mode == "RGB" else image.convert("RGB")
            px = processor(images=[image], return_tensors="pt")["pixel_values"]
            ref_pixels.append(px[0])
            e = hf.visual_projection(hf.vision_model(pixel_values=px)[1])
            ref["image"].append((e / e.norm(dim=-1, keepdim=True))[0].numpy())
    del hf

    result: dict = {"photos": len(photos), "texts": len(captions), "vs_fp32": {}, "vs_transformers": {},
                    "model_vs_transformers": {}, "service": {}}
    ours_fp32 = None
    for p in precisions:
        model = handspring_models.load("clip_vit_b_32", ckpt.weights_dir, precision=p)
        ours = {"text": model.embed_texts(captions), "image": model.embed_images([ph.data for ph in photos])}
        model_level = {"text": model.encode("text", ref_tokens), "image": model.encode("image", ref_pixels)}
        if p == "fp32":
            ours_fp32 = ours
        result["vs_fp32"][p] = compare(ours, ours_fp32, text_names, image_names)
        result["vs_transformers"][p] = compare(ours, ref, text_names, image_names)
        result["model_vs_transformers"][p] = compare(model_level, ref, text_names, image_names)
        for key in ("vs_fp32", "vs_transformers", "model_vs_transformers"):
            r = result[key][p]
            log(f"    {p:4s} {key:22s} min cos: image {r['image']['min_cos']:.7f}  text {r['text']['min_cos']:.7f}")
        del model
    return result
