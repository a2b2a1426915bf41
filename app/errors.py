"""Every error the service answers is JSON. Weaviate's routes answer ``{"error": "<message>"}``:
Weaviate decodes the body before it looks at the status and reports ``fail with status N: <error>``.
The OpenAI-compatible routes (``/v1/...``) answer OpenAI's shape, ``{"error": {"message", "type",
"param", "code"}}`` (app/openai_errors.py), which the OpenAI SDKs turn into their exception classes."""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from .disconnect import ClientGone
from .openai_errors import is_openai_route, openai_error_response

log = logging.getLogger("handspring.app")

CLIENT_CLOSED_REQUEST = 499


class ApiError(Exception):
    """An answer other than success: HTTP status and a message meant for the client. ``param``
    and ``code`` fill OpenAI's error fields on the /v1 routes (the request field at fault, a
    machine-readable reason); Weaviate's shape has no room for them."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None,
                 param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers
        self.param = param
        self.code = code


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps({"error": message}, ensure_ascii=False).encode()
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def respond(request: Request, status: int, message: str, headers: dict[str, str] | None = None,
            param: str | None = None, code: str | None = None) -> Response:
    """The error in the shape of the route it answers."""
    if is_openai_route(request.url.path):
        return openai_error_response(status, message, headers, param, code)
    return error_response(status, message, headers)


async def _api_error(request: Request, exc: ApiError) -> Response:
    return respond(request, exc.status, exc.message, exc.headers, exc.param, exc.code)


async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
    if exc.status_code == 404:
        message = f"no such route: {request.method} {request.url.path}"
    elif exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow") or (exc.headers or {}).get("allow")
        message = f"method {request.method} is not allowed on {request.url.path}"
        if allowed:
            message += f" (allowed: {allowed})"
    else:
        message = str(exc.detail)
    headers = dict(exc.headers) if exc.headers else None
    if exc.status_code in (204, 304):
        return Response(status_code=exc.status_code, headers=headers)
    return respond(request, exc.status_code, message, headers)


async def _validation_error(request: Request, exc: RequestValidationError) -> Response:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
    return respond(request, 422, "; ".join(parts) or "invalid request")


async def _client_gone(request: Request, exc: ClientGone) -> Response:
    """Nobody reads this answer; 499 (nginx's "client closed request") labels it in /metrics."""
    request.app.state.metrics.abandoned.inc()
    return respond(request, CLIENT_CLOSED_REQUEST, str(exc))


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return respond(request, 500, f"internal error: {type(exc).__name__}")


def install(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ClientGone, _client_gone)
    app.add_exception_handler(Exception, _internal_error)
