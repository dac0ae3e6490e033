"""How the router's HTTP server is started (router/server.py)."""

from __future__ import annotations

from typing import Any

import pytest

pytestmark = pytest.mark.unit


def _server_options(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    import router.server

    captured: dict[str, Any] = {}
    monkeypatch.setattr(router.server.uvicorn, "run", lambda *args, **kwargs: captured.update(kwargs))
    monkeypatch.setattr(router.server, "configure_logging", lambda *args, **kwargs: None)
    router.server.main()
    return captured


def test_forwarded_headers_are_not_believed_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """The client address is what per-address rate limits charge: a local client must not choose
    it by sending X-Forwarded-For (uvicorn's default trusts 127.0.0.1)."""
    monkeypatch.delenv("TICKETING_FORWARDED_ALLOW_IPS", raising=False)
    options = _server_options(monkeypatch)
    assert options["proxy_headers"] is False


def test_a_named_proxy_is_believed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TICKETING_FORWARDED_ALLOW_IPS", "10.0.0.5")
    options = _server_options(monkeypatch)
    assert options["proxy_headers"] is True and options["forwarded_allow_ips"] == "10.0.0.5"
