"""How the web pages are served (router/pages.py), with no browser: strict security headers on every
page and file, only the listed files, nothing inline that the CSP would have to allow, and demo
sign-in that exists only in demo mode."""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
import tempfile
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from cluster.settings import Settings
from router.app import create_app
from router.auth import TokenVerifier
from router.pages import CONTENT_SECURITY_POLICY, STATIC_DIR
from tests.harness import RunningCluster

PAGES = ["/", f"/events/{uuid.uuid4()}", "/gate", "/organizer"]


@pytest.mark.e2e
def test_pages_and_files_carry_strict_security_headers(http: httpx.Client) -> None:
    for path in [*PAGES, "/static/buyer.js", "/static/app.css"]:
        response = http.get(path)
        assert response.status_code == 200, (path, response.text)
        assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert "script-src 'self';" in CONTENT_SECURITY_POLICY and "unsafe" not in CONTENT_SECURITY_POLICY
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "no-referrer"
        assert response.headers["x-frame-options"] == "DENY"
    assert http.get("/").headers["content-type"] == "text/html; charset=utf-8"
    assert http.get("/static/gate.js").headers["content-type"] == "text/javascript; charset=utf-8"


@pytest.mark.e2e
def test_only_the_listed_files_are_served(http: httpx.Client) -> None:
    for path in ["/static/nothing.js", "/static/..%2Fpages.py", "/static/%2e%2e%2fapp.py", "/events/x/y"]:
        response = http.get(path)
        assert response.status_code == 404, (path, response.status_code)
        assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.unit
def test_no_page_needs_inline_script_or_style() -> None:
    """The CSP allows no inline script or style: a page that had one would break, so none may."""
    for page in STATIC_DIR.glob("*.html"):
        html = page.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)", html), page.name
        assert not re.search(r"\son[a-z]+=", html) and "style=" not in html and "<style" not in html, page.name
    for module in STATIC_DIR.glob("*.js"):
        source = module.read_text()
        assert "innerHTML" not in source and "eval(" not in source and "new Function" not in source, module.name


@pytest.mark.e2e
def test_demo_sign_in_is_off_without_demo_mode(http: httpx.Client, cluster: RunningCluster) -> None:
    assert http.get("/v1/demo").status_code == 404
    response = http.post("/v1/demo/token", json={"name": "mallory", "role": "organizer"})
    assert response.status_code == 404 and response.json()["code"] == "NOT_FOUND"


def call(settings: Settings, method: str, path: str, **kwargs: Any) -> httpx.Response:
    app = create_app(settings)

    async def run() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            return await client.request(method, path, **kwargs)

    # In a thread of its own: Playwright's sync API keeps an event loop running in this one.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, run()).result()


@pytest.mark.unit
def test_demo_sign_in_mints_buyer_and_organizer_tokens_in_demo_mode() -> None:
    settings = Settings(jwt_secret="demo-test-secret-0123456789abcdef", data_dir=Path(tempfile.mkdtemp()), demo=True)
    assert call(settings, "GET", "/v1/demo").json()["demo"] is True
    for role in ("buyer", "organizer"):
        minted = call(settings, "POST", "/v1/demo/token", json={"name": "ana", "role": role})
        assert minted.status_code == 200, minted.text
        principal = TokenVerifier(settings).verify(minted.json()["token"])
        assert (principal.user_id, principal.role) == ("ana", role)
    for body in ({"name": "ana", "role": "admin"}, {"name": "ana", "role": "validator"}, {"name": ""},
                 {"name": "a b"}, {"name": "x" * 65}):
        assert call(settings, "POST", "/v1/demo/token", json=body).status_code == 422, body
    off = settings.model_copy(update={"demo": False})
    assert call(off, "POST", "/v1/demo/token", json={"name": "ana"}).status_code == 404
    assert call(off, "GET", "/v1/demo").status_code == 404


@pytest.mark.unit
def test_up_with_demo_turns_demo_sign_in_on_in_the_router(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """`ticketing up --demo` is the only switch: the router learns it from its environment."""
    import cluster.supervisor
    from cluster.cli import build_parser

    started: list[Settings] = []
    monkeypatch.setattr(cluster.supervisor, "run_up", lambda settings, **_: started.append(settings) or 0)
    for flags, expected in (([], "false"), (["--demo"], "true")):
        args = build_parser().parse_args(["up", "--data-dir", str(tmp_path), *flags])
        assert args.handler(args) == 0
        deployment = cluster.supervisor.Deployment(settings=started[-1])
        assert deployment.router_environment()["TICKETING_DEMO"] == expected
