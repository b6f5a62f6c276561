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

ROOT = Path(__file__).resolve().parents[1]  # the tree whose app.py the server runs
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]


def chromium() -> str | None:
    for path in (
        os.environ.get("LENSCAPE_CHROMIUM", ""),
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome",
    ):
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
    env = {
        **os.environ,
        "LENSCAPE_HOME": str(home),
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
    }
    log = open(home / "server.log", "w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lenscape",
            "app",  # as lenscape app starts it
            "--server.port",
            str(port),
            "--server.address",
            "127.0.0.1",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
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


def train_preset(home: Path, name: str, epochs: int, seeds=(0,)) -> None:
    """`lenscape train` of a preset into workspace `home`, before a server over it starts."""
    subprocess.run(
        [sys.executable, "-m", "lenscape", "train", "--preset", name, "--epochs", str(epochs)]
        + ["--seeds", ",".join(map(str, seeds))],
        cwd=ROOT,
        env={**os.environ, "LENSCAPE_HOME": str(home)},
        check=True,
        capture_output=True,
    )


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
        pg.add_init_script(SCRIPT_RUNS)
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


# Streamlit's own messages say when a script run was asked for and when it ended: the page's side
# of the WebSocket (BackMsg.rerun_script, field 11, out; ForwardMsg.script_finished, field 6, in) is
# counted here, in the page, before the app's script loads. Only the top-level protobuf fields are read.
SCRIPT_RUNS = """
(() => {
  if (window.__runs) return;
  // asked, finished, early: sequence numbers of the last such message; ended: every run that ended
  const runs = window.__runs = {seq: 0, asked: 0, finished: 0, early: 0, ended: 0, quietSince: null};
  const fields = (bytes) => {                 // [[field number, value or bytes], ...] of one message
    const out = [];
    let i = 0;
    const varint = () => {
      let x = 0, m = 1, c;
      do { c = bytes[i++]; x += (c & 127) * m; m *= 128; } while (c & 128 && i < bytes.length);
      return x;
    };
    while (i < bytes.length) {
      const tag = varint(), field = Math.floor(tag / 8), wire = tag & 7;
      if (wire === 0) out.push([field, varint()]);
      else if (wire === 2) { const n = varint(); out.push([field, bytes.subarray(i, i + n)]); i += n; }
      else if (wire === 1) i += 8;
      else if (wire === 5) i += 4;
      else break;
    }
    return out;
  };
  const asBytes = (data) => data instanceof ArrayBuffer ? new Uint8Array(data)
    : ArrayBuffer.isView(data) ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength) : null;
  const send = WebSocket.prototype.send;
  WebSocket.prototype.send = function (data) {
    try {
      const bytes = asBytes(data);
      const rerun = bytes && fields(bytes).find(([f]) => f === 11);
      // a whole-page run (a fragment's own run, fragment_id = field 5, is not waited for)
      if (rerun && !fields(rerun[1]).some(([f, v]) => f === 5 && v.length)) runs.asked = ++runs.seq;
    } catch (e) {}
    return send.call(this, data);
  };
  const Socket = window.WebSocket;
  window.WebSocket = class extends Socket {
    constructor(...args) {
      super(...args);
      this.addEventListener("message", (event) => {
        try {
          const bytes = asBytes(event.data);
          const done = bytes && fields(bytes).find(([f]) => f === 6);
          if (!done) return;
          runs.ended += 1;
          if (done[1] === 2) runs.early = ++runs.seq;               // FINISHED_EARLY_FOR_RERUN: another follows
          else if (done[1] !== 3) runs.finished = ++runs.seq;       // a whole run (3: a fragment's)
        } catch (e) {}
      });
    }
  };
})();
"""

# Settled: the last whole-page run asked for has finished (not cut short for another), the app says
# its script is not running, and that has held for QUIET_MS since settle() began to wait: a widget
# may send its change a moment after Playwright's action returns (a table's row ticks go out ~0.3 s
# after the click, a data editor's edits after 150 ms, a custom component's message on the next task).
SETTLED = """(quietMs) => {
  const runs = window.__runs, app = document.querySelector("[data-testid='stApp']");
  const now = runs && app && runs.finished > runs.asked && runs.finished > runs.early
    && app.getAttribute("data-test-script-state") === "notRunning"
    && document.querySelector("[data-testid='stMainBlockContainer'] h1") !== null;
  if (!now) { if (runs) runs.quietSince = null; return false; }
  runs.quietSince = runs.quietSince ?? performance.now();
  return performance.now() - runs.quietSince >= quietMs;
}"""
QUIET_MS = 500


def settle(pg, timeout_ms: int = 60_000) -> None:
    """Wait until Streamlit has drawn the page and finished running the script (every run the page
    asked for, and any the script started itself with st.rerun)."""
    pg.wait_for_selector("[data-testid='stMainBlockContainer'] h1", timeout=timeout_ms)
    pg.evaluate("() => { if (window.__runs) window.__runs.quietSince = null; }")  # quiet from now on
    pg.wait_for_function(SETTLED, arg=QUIET_MS, timeout=timeout_ms, polling=50)


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
