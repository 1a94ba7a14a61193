"""The monitoring page: static files (actors/web/) that the gateway serves at `/`, with no build step.

The files hold no data and no secret: the page asks its user for a token and sends it as a bearer header
on every API call, so the files themselves are served without one (PUBLIC_PATHS). The page talks to this
gateway only; its Content-Security-Policy forbids any other origin, so it works with no internet.
"""
from __future__ import annotations

from pathlib import Path

from aiohttp import web

from actors.validation import ROLE

WEB = Path(__file__).with_name("web")
FILES = {"/": "index.html", "/ui/app.js": "app.js", "/ui/style.css": "style.css"}
PUBLIC_PATHS = frozenset(FILES)
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob:; object-src 'none'; base-uri 'none'; "
                               "frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidated on each load: an upgraded gateway serves its own page
}


def add_routes(app: web.Application) -> None:
    for path, name in FILES.items():
        app.router.add_get(path, _serve(WEB / name))
    app.router.add_get("/whoami", whoami)


async def whoami(request: web.Request) -> web.Response:
    """The caller's role, so the page shows admin controls to admins only (the server enforces it anyway).
    The auth middleware (actors/gateway.py) has accepted the token by now and recorded its role."""
    return web.json_response({"role": request[ROLE]})


def _serve(file: Path):
    async def handler(request: web.Request) -> web.FileResponse:
        return web.FileResponse(file, headers=HEADERS)
    return handler
