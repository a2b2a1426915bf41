"""Stand-in for Weaviate's own CLIP inference container (weaviate/multi2vec-clip-inference),
served the way it serves an OpenAI CLIP model: a FastAPI app that loads ``CLIPModel`` and
``CLIPProcessor`` from a Hugging Face folder at start-up, answers 204 on ``/.well-known/live``
and ``/.well-known/ready``, and per ``POST /vectorize`` runs one job in a thread pool which,
under ONE global lock, decodes each base64 image with PIL (converted to RGB), runs
``processor(...)``, the text or vision tower and its projection, normalises, and returns lists.
Each request is encoded alone: nothing is batched across requests.

One deliberate difference: the upstream code runs the towers without ``torch.no_grad()`` (an
autograd graph is built and dropped per request); here they run under it. That makes this
reference a little faster and leaner than the real container, so every ratio against it is
conservative.

    python -m bench.reference_server --weights HF_FOLDER --port 8080 [--host 127.0.0.1]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import logging
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from threading import Lock

from fastapi import FastAPI, Response, status
from pydantic import BaseModel

logger = logging.getLogger("uvicorn")


class ClipInput(BaseModel):
    texts: list = []
    images: list = []


def parse_image(b64: str):
    from PIL import Image

    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    if image.mode != "RGB":
        image = image.convert("RGB")
    return image


class ReferenceCLIP:
    def __init__(self, folder: str):
        import torch
        from transformers import CLIPModel, CLIPProcessor

        self.torch = torch
        self.lock = Lock()
        self.model = CLIPModel.from_pretrained(folder).eval()
        self.processor = CLIPProcessor.from_pretrained(folder)
        self.executor = ThreadPoolExecutor()

    def vectorize(self, payload: ClipInput) -> tuple[list, list]:
        torch = self.torch
        text_vectors: list = []
        if payload.texts:
            with self.lock, torch.no_grad():
                inputs = self.processor(text=payload.texts, return_tensors="pt", padding=True)
                pooled = self.model.text_model(**inputs)[1]
                embeds = self.model.text_projection(pooled)
                embeds = embeds / embeds.norm(dim=-1, keepdim=True)
                text_vectors = embeds.tolist()
        image_vectors: list = []
        if payload.images:
            with self.lock, torch.no_grad():
                images = [parse_image(image) for image in payload.images]
                inputs = self.processor(images=images, return_tensors="pt", padding=True)
                pooled = self.model.vision_model(**inputs)[1]
                embeds = self.model.visual_projection(pooled)
                embeds = embeds / embeds.norm(dim=-1, keepdim=True)
                image_vectors = embeds.tolist()
        return text_vectors, image_vectors

    async def vectorize_async(self, payload: ClipInput) -> tuple[list, list]:
        return await asyncio.wrap_future(self.executor.submit(self.vectorize, payload))


def create_app(weights: str) -> FastAPI:
    state: dict = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        state["clip"] = ReferenceCLIP(weights)  # uvicorn listens only after this returns
        yield

    app = FastAPI(lifespan=lifespan)

    @app.get("/.well-known/live", response_class=Response)
    @app.get("/.well-known/ready", response_class=Response)
    async def live_and_ready(response: Response):
        response.status_code = status.HTTP_204_NO_CONTENT

    @app.get("/meta")
    async def meta():
        return state["clip"].model.config.to_dict()

    @app.post("/vectorize")
    async def vectorize(payload: ClipInput, response: Response):
        try:
            text_vectors, image_vectors = await state["clip"].vectorize_async(payload)
            return {"textVectors": text_vectors, "imageVectors": image_vectors}
        except Exception as e:  # as upstream: every failure is a 500 with the message
            logger.exception("reference vectorize failed")
            response.status_code = status.HTTP_500_INTERNAL_SERVER_ERROR
            return {"error": str(e)}

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.reference_server", description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", required=True, help="a Hugging Face CLIPModel folder with processor files")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    import uvicorn

    uvicorn.run(create_app(args.weights), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
