"""Finding 16: a page served on another port of this machine cannot open a session of Lenscape
(Streamlit's own check accepts any port of localhost); the app's own page and origins listed by
whoever runs the server can. Real server, real WebSocket handshakes."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from tests.browser import streamlit_server

ROOT = Path(__file__).resolve().parents[2]


async def _opens(url: str, origin: str, host: str | None = None) -> bool:
    """Whether the server keeps a WebSocket from `origin` open (a refusal closes it with 1008); `host`:
    the name in the request's Host header (the address connected to stays the server's)."""
    import websockets

    port = int(url.rsplit(":", 1)[1])
    target = f"ws://{host or '127.0.0.1'}:{port}/_stcore/stream"
    try:
        async with websockets.connect(target, origin=origin, open_timeout=10, host="127.0.0.1", port=port) as ws:
            try:
                await asyncio.wait_for(ws.recv(), timeout=2)
            except asyncio.TimeoutError:
                return True  # still open, waiting for the client's first message
            return True
    except (websockets.exceptions.ConnectionClosed, websockets.exceptions.InvalidStatus, OSError):
        return False


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("ws-home")
    (home / ".streamlit").mkdir()
    os.environ["STREAMLIT_SERVER_CORS_ALLOWED_ORIGINS"] = "https://lenscape.example.org"
    try:
        with streamlit_server(home) as url:
            yield url
    finally:
        os.environ.pop("STREAMLIT_SERVER_CORS_ALLOWED_ORIGINS", None)


def test_another_local_port_cannot_open_a_session(server):
    port = int(server.rsplit(":", 1)[1])
    for origin in (f"http://127.0.0.1:{port + 1}", f"http://localhost:{port + 7}", "http://127.0.0.1"):
        assert not asyncio.run(_opens(server, origin)), f"a page at {origin} opened a session"


def test_a_rebound_name_cannot_open_a_session(server):
    """DNS rebinding: evil.example made to point at 127.0.0.1 is the page's own origin for the
    browser, so only the host-name allow-list stops it."""
    port = int(server.rsplit(":", 1)[1])
    assert not asyncio.run(_opens(server, f"http://evil.example:{port}", host="evil.example"))


def test_the_app_itself_and_listed_origins_can(server):
    assert asyncio.run(_opens(server, server))
    assert asyncio.run(_opens(server, "https://lenscape.example.org"))


def test_the_readme_says_what_a_shared_deployment_needs():
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## A shared deployment") :]
    for needed in (
        "reverse proxy",
        "authentication",
        "server.address",
        "server.corsAllowedOrigins",
        "browser.serverAddress",
        "LENSCAPE_ALLOWED_ROOTS",
        "LENSCAPE_LIMITS",
    ):
        assert needed in section, needed
