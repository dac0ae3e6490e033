"""The web pages (issue 16, docs/web.md): the buyer's (`/`, `/events/{id}`), the gate's (`/gate`) and
the organizer's (`/organizer`), plain HTML, CSS and ES modules from `router/static/`, with no build
step; and the demo sign-in (`POST /v1/demo/token`), which answers only when the router runs with
`ticketing up --demo` (the setting `demo`).

The pages call the public REST API (API.md) from the browser like any other client; this module
only serves files. They go through FastAPI's stack, not the edge's hot routes: a page is loaded
once per visit, not thousands of times a second.

Every page answer carries a strict content security policy: scripts, styles and connections from
this origin only, no inline script or style element, no plugins, no framing; images also from
`data:` and `blob:` (ticket QR codes are fetched with the buyer's token and shown as blob URLs).
The files are read once, at import, from a fixed list: a request names a file, never a path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import StringConstraints

from cluster.secrets import read_jwt_secret
from router.auth import issue_token
from router.deps import parse_body, settings_of
from router.jsonbody import JSONBody
from router.problems import ApiError
from router.schemas import Strict

STATIC_DIR = Path(__file__).parent / "static"
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml", ".png": "image/png"}
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; media-src 'self' blob:; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    # The gate page may use the camera to read QR codes; nothing else may.
    "Permissions-Policy": "camera=(self), microphone=(), geolocation=()",
    "Cross-Origin-Opener-Policy": "same-origin",
}
# Short enough that a deployment's new pages reach browsers within the minute; a page is small.
STATIC_MAX_AGE_S = 60
# A demo token lives as long as a demo session: long enough to buy and to check in.
DEMO_TOKEN_TTL_S = 8 * 3600
DEMO_NAME_CHARS_MAX = 64


def _load_files() -> dict[str, tuple[bytes, str]]:
    files: dict[str, tuple[bytes, str]] = {}
    for path in sorted(STATIC_DIR.iterdir()):
        content_type = CONTENT_TYPES.get(path.suffix)
        if path.is_file() and content_type is not None:
            files[path.name] = (path.read_bytes(), content_type)
    return files


FILES = _load_files()
router = APIRouter(tags=["pages"], include_in_schema=False)


def _file(name: str) -> Response:
    found = FILES.get(name)
    if found is None:
        raise ApiError(404, "NOT_FOUND", "no such file")
    body, content_type = found
    return Response(body, media_type=content_type,
                    headers={**SECURITY_HEADERS, "Cache-Control": f"public, max-age={STATIC_MAX_AGE_S}"})


@router.get("/")
async def buyer_home() -> Response:
    return _file("buyer.html")


@router.get("/events/{event_id}")
async def buyer_event(event_id: str) -> Response:
    return _file("buyer.html")  # the page reads the id from its address


@router.get("/gate")
async def gate_page() -> Response:
    return _file("gate.html")


@router.get("/organizer")
async def organizer_page() -> Response:
    return _file("organizer.html")


@router.get("/static/{name}")
async def static_file(name: str) -> Response:
    return _file(name)


class DemoTokenBody(Strict):
    name: Annotated[str, StringConstraints(min_length=1, max_length=DEMO_NAME_CHARS_MAX,
                                           pattern=r"^[A-Za-z0-9._-]+$")]
    role: Literal["buyer", "organizer"] = "buyer"


def _demo_secret(request: Request) -> str:
    """The HS256 secret to sign demo tokens with; 404 unless demo mode is on and tokens are ours."""
    settings = settings_of(request)
    if not settings.demo or settings.jwt_public_key_file is not None or settings.jwt_algorithm != "HS256":
        raise ApiError(404, "NOT_FOUND", "demo sign-in is off (ticketing up --demo turns it on)")
    return settings.jwt_secret or read_jwt_secret(settings.resolved_data_dir)


@router.get("/v1/demo")
async def demo_mode(request: Request) -> JSONBody:
    """200 when demo sign-in is on (the pages show its button), 404 otherwise."""
    _demo_secret(request)
    return JSONBody({"demo": True, "roles": ["buyer", "organizer"]})


@router.post("/v1/demo/token")
async def demo_token(request: Request) -> JSONBody:
    """A token for a chosen name, only in demo mode: what `ticketing token` prints, without a shell."""
    secret = _demo_secret(request)
    body = await parse_body(request, DemoTokenBody)
    token = issue_token(secret, body.name, body.role, DEMO_TOKEN_TTL_S)
    return JSONBody({"token": token, "sub": body.name, "role": body.role, "expires_in_s": DEMO_TOKEN_TTL_S})
