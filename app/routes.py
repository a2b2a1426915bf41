"""Thin HTTP routes; the work is in ``Service`` (app/service.py)."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse, Response

from .auth import require_api_key
from .disconnect import ClientGone, while_connected
from .errors import ApiError, error_response
from .schemas import ErrorResponse, VectorizeRequest, VectorizeResponse
from .service import Service

router = APIRouter()

ERRORS = {code: {"model": ErrorResponse} for code in (400, 401, 413, 422, 429, 500, 503)}


def _service(request: Request) -> Service:
    return request.app.state.service


ServiceDep = Annotated[Service, Depends(_service)]


@router.head("/.well-known/live", include_in_schema=False)
@router.get("/.well-known/live", status_code=204, response_class=Response)
async def live() -> Response:
    return Response(status_code=204)


@router.head("/.well-known/ready", include_in_schema=False)
@router.get("/.well-known/ready", status_code=204, response_class=Response, responses={503: {"model": ErrorResponse}})
async def ready(request: Request, service: ServiceDep) -> Response:
    if service.ready:
        return Response(status_code=204)
    if request.method == "HEAD":
        return Response(status_code=503, headers={"Retry-After": "1"})
    return error_response(503, service.not_ready_message(), {"Retry-After": "1"})


@router.get("/meta", responses={401: {"model": ErrorResponse}, 503: {"model": ErrorResponse}},
            dependencies=[Depends(require_api_key)])
async def meta(service: ServiceDep) -> JSONResponse:
    return JSONResponse(service.meta())


@router.post(
    "/vectorize",
    response_model=VectorizeResponse,
    responses=ERRORS,
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": VectorizeRequest.model_json_schema()}}}},
    dependencies=[Depends(require_api_key)],
)
async def vectorize(request: Request, service: ServiceDep) -> Response:
    arrived = time.monotonic()
    service.require_ready()  # before reading a possibly large body
    with service.admit():  # 429 past the cap, before the body is read
        body = await read_body(request, service.settings.max_body_bytes)
        answer = await while_connected(request, service.vectorize(body, arrived))
    return Response(answer, media_type="application/json")


@router.get("/metrics", include_in_schema=False)
async def metrics(service: ServiceDep) -> Response:
    m = service.metrics
    return Response(m.render(), media_type=m.content_type)


async def read_body(request: Request, limit: int) -> bytes:
    """The whole body, refusing (413) as soon as it passes ``limit`` bytes: the Content-Length
    header is checked first but not trusted (chunked bodies have none, and it may lie)."""
    too_big = f"request body over the limit of {limit} bytes (HANDSPRING_MAX_BODY_BYTES)"
    declared = request.headers.get("content-length")
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise ApiError(413, too_big)
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, too_big)
            chunks.append(chunk)
    except ClientDisconnect:
        raise ClientGone("the client went away while sending its request") from None
    return b"".join(chunks)
