"""Optional bearer-token authentication for the embedding routes (HANDSPRING_API_KEY).

Off when no key is set: Weaviate's multi2vec modules send no key. When on, ``/vectorize``,
``/meta`` and the ``/v1`` routes want ``Authorization: Bearer <key>`` with one of the keys; the
probes (``/.well-known/live``, ``/.well-known/ready``) and ``/metrics`` stay open. A missing or
wrong key is a 401 in the route's own error shape (app/errors.py), before the body is read.
"""

from __future__ import annotations

import hmac

from fastapi import Request

from .errors import ApiError

CHALLENGE = {"WWW-Authenticate": "Bearer"}


def _matches(token: str, keys: tuple[str, ...]) -> bool:
    given = token.encode("latin-1")  # how Starlette decoded the header
    found = False
    for key in keys:  # every key compared, in constant time: how far a guess got is not timed
        found |= hmac.compare_digest(given, key.encode())
    return found


async def require_api_key(request: Request) -> None:
    """A FastAPI dependency; raises ApiError 401 unless the request carries a valid key."""
    service = request.app.state.service
    keys = service.settings.api_keys
    if not keys:
        return
    header = request.headers.get("authorization")
    scheme, _, token = (header or "").strip().partition(" ")
    token = token.strip()
    if header is None:
        message = "missing API key: this server wants Authorization: Bearer <key> (HANDSPRING_API_KEY)"
    elif scheme.lower() != "bearer" or not token:
        message = "the Authorization header must read Bearer <key>"
    elif not _matches(token, keys):
        message = "invalid API key"
    else:
        return
    service.metrics.rejected.labels("unauthorized").inc()
    raise ApiError(401, message, headers=CHALLENGE, code="invalid_api_key")
