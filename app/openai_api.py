"""OpenAI's embeddings API beside Weaviate's: ``POST /v1/embeddings``, ``GET /v1/models``.

The same service serves both: the same engine and batching (a /v1 request's texts share forward
passes with /vectorize's), the same limits, deadline and admission, and so the same vectors.
Errors are in OpenAI's shape (app/openai_errors.py).
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
from fastapi import APIRouter, Depends
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .auth import require_api_key
from .disconnect import retrieve_outcome, while_connected
from .errors import ApiError
from .model_names import served_names
from .openai_schemas import (EmbeddingsRequest, EmbeddingsRequestDoc, EmbeddingsResponseDoc, OpenAIErrorDoc,
                             encode_embeddings, model_object, parse_embeddings)
from .routes import ServiceDep, read_body
from .service import InputNames, Service

router = APIRouter(prefix="/v1", dependencies=[Depends(require_api_key)], tags=["OpenAI-compatible"])

ERRORS = {code: {"model": OpenAIErrorDoc} for code in (400, 401, 404, 413, 429, 500, 503)}


class OpenAINames(InputNames):
    """Errors name items by their place in ``input``: ``input[3]: not an image ...``."""

    param = "input"

    def __init__(self, positions: dict[str, list[int]]):
        self.positions = positions

    def field(self, modality: str) -> str:
        return f"input[{self.positions[modality][0]}]"

    def item(self, modality: str, index: int) -> str:
        return f"input[{self.positions[modality][index]}]"


@router.post(
    "/embeddings",
    response_model=EmbeddingsResponseDoc,
    responses=ERRORS,
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": EmbeddingsRequestDoc.model_json_schema()}}}},
)
async def embeddings(request: Request, service: ServiceDep) -> Response:
    arrived = time.monotonic()
    service.require_ready()  # before reading a possibly large body
    with service.admit():  # 429 past the cap, before the body is read
        body = await read_body(request, service.settings.max_body_bytes)
        answer = await while_connected(request, create_embeddings(service, body, arrived))
    return Response(answer, media_type="application/json")


async def create_embeddings(service: Service, body: bytes, arrived: float) -> bytes:
    service.require_ready(arrived)
    job = service.job(arrived)
    request = await service.parse(parse_embeddings, body)
    embedder = service.embedder
    model = resolve_model(embedder, request.model)
    if request.dimensions is not None and request.dimensions != embedder.dim:
        raise ApiError(400, f"dimensions: {model} returns {embedder.dim}-dimensional vectors and cannot "
                            f"shorten them; leave dimensions out (or set it to {embedder.dim})", param="dimensions")
    counting = _count_tokens(embedder, request.inputs.get("text", []))
    try:
        vectors = await service.embed_inputs(request.inputs, job, OpenAINames(request.positions))
    except BaseException:
        counting.add_done_callback(retrieve_outcome)
        raise
    prompt_tokens = await counting
    return encode_embeddings(in_input_order(request, vectors, embedder.dim), model,
                             request.encoding_format, prompt_tokens)


def resolve_model(embedder, name: str) -> str:
    """The canonical name of the loaded model if ``name`` is one of its names, else 404."""
    names = served_names(embedder)
    if name not in names:
        raise ApiError(404, f"the model {name!r} does not exist on this server; it serves {names[0]}"
                            + (f" (also named {', '.join(names[1:])})" if len(names) > 1 else "")
                            + "; GET /v1/models lists them", param="model", code="model_not_found")
    return names[0]


def _count_tokens(embedder, texts: list[str]) -> asyncio.Future:
    """OpenAI's ``usage``: the texts' tokens as the model reads them (start and end tokens
    included, cut at its context); other inputs count 0. Counted on a worker thread while the
    engine embeds, so it adds no latency; the engine tokenizes on its own, in its batches."""
    def count() -> int:
        return sum(len(embedder.prepare("text", text)) for text in texts)

    if not texts:
        future = asyncio.get_running_loop().create_future()
        future.set_result(0)
        return future
    return asyncio.get_running_loop().run_in_executor(None, count)


def in_input_order(request: EmbeddingsRequest, vectors: dict[str, np.ndarray], dim: int) -> np.ndarray:
    out = np.empty((len(request.items), dim), dtype=np.float32)
    for modality, positions in request.positions.items():
        out[positions] = vectors[modality]
    return out


@router.get("/models", responses=ERRORS)
async def list_models(service: ServiceDep) -> JSONResponse:
    service.require_ready()
    created = service.loaded_at or 0
    return JSONResponse({"object": "list",
                         "data": [model_object(name, created) for name in served_names(service.embedder)]})


@router.get("/models/{model:path}", responses=ERRORS)
async def retrieve_model(model: str, service: ServiceDep) -> JSONResponse:
    service.require_ready()
    resolve_model(service.embedder, model)  # 404 unless it is one of the loaded model's names
    return JSONResponse(model_object(model, service.loaded_at or 0))
