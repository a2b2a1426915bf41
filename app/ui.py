"""The try-it page: ``GET /`` serves app/static/index.html, which loads its script and style from
``/ui/``. Plain files, no build step; they call /meta and /vectorize like any client.

Never on Weaviate's routes (/vectorize, /meta, /.well-known/*). ``HANDSPRING_UI=false`` turns it
off: its routes then answer 404 like any unknown route.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from starlette.exceptions import HTTPException
from starlette.responses import FileResponse

STATIC = Path(__file__).resolve().parent / "static"
# The only files served, so no path from a request ever reaches the file system.
ASSETS = {
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
# The page talks only to this server; previews are blob: URLs of the user's own files.
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
        "media-src 'self' blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidated each time: an upgraded server serves its own page
}

router = APIRouter(include_in_schema=False)


def _require_ui(request: Request) -> None:
    service = getattr(request.app.state, "service", None)
    if service is None or not service.settings.ui:
        raise HTTPException(404)


@router.api_route("/", methods=["GET", "HEAD"])
async def page(request: Request) -> FileResponse:
    _require_ui(request)
    return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8", headers=HEADERS)


@router.api_route("/ui/{name}", methods=["GET", "HEAD"])
async def asset(name: str, request: Request) -> FileResponse:
    _require_ui(request)
    if name not in ASSETS:
        raise HTTPException(404)
    return FileResponse(STATIC / name, media_type=ASSETS[name], headers=HEADERS)
