"""What the browser tests share: a real `streamlit run` server over a workspace, headless Chromium
(Debian's, driven by Playwright), waiting for a page to settle, and a small HTTP server on another
port that records every request (a beacon, or an attacker's page).

Used by tests/e2e and tests/security; a test module starts one Lenscape server and one browser.
"""

from __future__ import annotations

import http.server
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]          # the tree whose app.py the server runs
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-quic"]


def chromium() -> str | None:
    for path in (os.environ.get("LENSCAPE_CHROMIUM", ""), "/usr/bin/chromium", "/usr/bin/chromium-browser",
                 "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome"):
        if path and Path(path).exists():
            return path
    return shutil.which("chromium") or shutil.which("google-chrome")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def streamlit_server(home: Path) -> Iterator[str]:
    """A Lenscape server (this tree's app.py and packages) over workspace `home`; its URL."""
    port = free_port()
    env = {**os.environ, "LENSCAPE_HOME": str(home),
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    log = open(home / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "lenscape", "app",      # as lenscape app starts it
                             "--server.port", str(port), "--server.address", "127.0.0.1"],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail(f"streamlit did not start; log:\n{(home / 'server.log').read_text()}")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


@contextmanager
def browser_page(viewport: dict | None = None):
    """A Chromium page (skips the test where no Chromium is found, fails in CI)."""
    exe = chromium()
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is required in CI (apt-get install chromium); none found")
        pytest.skip("no Chromium/Chrome found: install Debian's chromium or set LENSCAPE_CHROMIUM")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=CHROMIUM_FLAGS)
        pg = browser.new_page(viewport=viewport or {"width": 1400, "height": 2600})
        pg.set_default_timeout(90_000)  # a 2-core CI machine training in the background is slow to redraw
        try:
            yield pg
        finally:
            browser.close()


def screenshots_dir() -> Path:
    folder = Path(os.environ.get("LENSCAPE_SCREENSHOTS", ROOT / "test-artifacts" / "screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots: {folder}")
    return folder


def settle(pg, timeout_ms: int = 60_000) -> None:
    """Wait until Streamlit has drawn the page and finished running the script."""
    pg.wait_for_selector("[data-testid='stMainBlockContainer'] h1", timeout=timeout_ms)
    pg.wait_for_timeout(800)
    pg.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=timeout_ms)
    pg.wait_for_timeout(500)


def no_exception(pg) -> None:
    errors = pg.locator("[data-testid='stException']")
    assert errors.count() == 0, errors.first.inner_text()


def snap(pg, shots: Path, name: str) -> None:
    """Settled, no exception on the page, screenshot saved."""
    settle(pg)
    no_exception(pg)
    pg.screenshot(path=str(shots / f"{name}.png"), full_page=True)


class Recorder:
    """A tiny HTTP server on its own 127.0.0.1 port, in a thread: serves `pages` (path → HTML) and
    records the path of every request it gets."""

    def __init__(self, pages: dict[str, str] | None = None) -> None:
        self.pages = dict(pages or {})
        self.requests: list[str] = []
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                recorder.requests.append(self.path)
                body = recorder.pages.get(self.path.split("?")[0])
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Type", "text/html; charset=utf-8" if body is not None else "image/png")
                self.send_header("Access-Control-Allow-Origin", "*")
                self.end_headers()
                self.wfile.write((body or "").encode())

            do_POST = do_GET

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def hits(self, *ignore: str) -> list[str]:
        """The requests it got, but for the paths in `ignore` (pages the test opened itself) and the
        favicon a browser asks for with them."""
        return [p for p in self.requests if p.split("?")[0] not in {*ignore, "/favicon.ico"}]

    def __enter__(self) -> Recorder:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
