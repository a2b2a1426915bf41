"""Thin HTTP routes; the work is in ``Service`` (app/service.py)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import JSONResponse, Response

from .errors import ApiError, error_response
from .schemas import ErrorResponse, VectorizeRequest, VectorizeResponse

router = APIRouter()

ERRORS = {code: {"model": ErrorResponse} for code in (400, 413, 422, 500, 503)}


def _service(request: Request):
    return request.app.state.service


@router.head("/.well-known/live", include_in_schema=False)
@router.get("/.well-known/live", status_code=204, response_class=Response)
async def live() -> Response:
    return Response(status_code=204)


@router.head("/.well-known/ready", include_in_schema=False)
@router.get("/.well-known/ready", status_code=204, response_class=Response, responses={503: {"model": ErrorResponse}})
async def ready(request: Request) -> Response:
    service = _service(request)
    if service.ready:
        return Response(status_code=204)
    if request.method == "HEAD":
        return Response(status_code=503, headers={"Retry-After": "1"})
    return error_response(503, service.not_ready_message(), {"Retry-After": "1"})


@router.get("/meta", responses={503: {"model": ErrorResponse}})
async def meta(request: Request) -> JSONResponse:
    return JSONResponse(_service(request).meta())


@router.post(
    "/vectorize",
    response_model=VectorizeResponse,
    responses=ERRORS,
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": VectorizeRequest.model_json_schema()}}}},
)
async def vectorize(request: Request) -> Response:
    service = _service(request)
    service.require_ready()  # before reading a possibly large body
    body = await read_body(request, service.settings.max_body_bytes)
    return Response(await service.vectorize(body), media_type="application/json")


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    m = _service(request).metrics
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
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, too_big)
        chunks.append(chunk)
    return b"".join(chunks)
