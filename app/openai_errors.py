"""Errors in OpenAI's shape, for the OpenAI-compatible routes under ``/v1``:

    {"error": {"message": "...", "type": "invalid_request_error", "param": "input", "code": null}}

OpenAI answers every defect of a request with 400 (``invalid_request_error``), where Weaviate's
routes say 422 for a well-formed body with a bad field or item; the /v1 routes follow OpenAI, so
the SDKs raise ``BadRequestError`` as they would against OpenAI. The other statuses are the same
on both APIs (401, 404, 413, 429, 503, ...); the SDKs map them to their own classes
(``AuthenticationError``, ``NotFoundError``, ``RateLimitError``, ``InternalServerError``...) and
retry 429 and 5xx by themselves.
"""

from __future__ import annotations

import json

from starlette.responses import Response

PREFIX = "/v1"


def is_openai_route(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


def error_type(status: int) -> str:
    """OpenAI's ``type`` for a status (their 401s are ``invalid_request_error`` too)."""
    if status == 429:
        return "rate_limit_error"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


def openai_error_response(status: int, message: str, headers: dict[str, str] | None = None,
                          param: str | None = None, code: str | None = None) -> Response:
    if status == 422:
        status = 400
    body = {"error": {"message": message, "type": error_type(status), "param": param, "code": code}}
    return Response(json.dumps(body, ensure_ascii=False).encode(), status_code=status,
                    media_type="application/json", headers=headers)
