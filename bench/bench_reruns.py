"""How long the app takes to answer an interaction that starts no job, in a real browser.

Starts the app on a fresh workspace, drives headless Chromium, and times each interaction from the
click until the app reports its script finished (`data-test-script-state` = notRunning) and the
page shows what the interaction asked for. Prints the server-side rerun of the Models page as the
baseline measured in the same run (the browser's share is the rest).

    python bench/bench_reruns.py [--repeats 3]

Needs Chromium (`/usr/bin/chromium`, or LENSCAPE_CHROMIUM) and `playwright` from PyPI.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run"]
DATA_SETS = {"scikit-learn digits (8×8, always available)": "1,437 training", "MNIST": "60,000 training", "CIFAR-10": "50,000 training"}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    home = tempfile.mkdtemp(prefix="lenscape-bench-")
    env = {**os.environ, "LENSCAPE_HOME": home,
           "LENSCAPE_DATA": os.environ.get("LENSCAPE_DATA", str(ROOT.parent / "shared" / "data"))}
    rows: list[tuple[str, list[float]]] = []
    # twice on the same workspace: the first server decodes the data sets into the workspace's cache,
    # the second (a restart) loads them from it
    for when in ("fresh workspace", "server restarted"):
        port = _port()
        server = subprocess.Popen([sys.executable, "-m", "ui.serve", "--server.port", str(port),
                                   "--server.address", "127.0.0.1", "--server.headless", "true"],
                                  cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(120):
                try:
                    urllib.request.urlopen(url + "/_stcore/health", timeout=1)
                    break
                except OSError:
                    time.sleep(0.5)
            with sync_playwright() as pw:
                exe = os.environ.get("LENSCAPE_CHROMIUM") or "/usr/bin/chromium"
                browser = pw.chromium.launch(executable_path=exe, args=FLAGS)
                pg = browser.new_page(viewport={"width": 1400, "height": 1000})
                rows += [(f"{when}: {label}", times) for label, times in _run(pg, url, args.repeats).items()]
                browser.close()
        finally:
            server.terminate()
            server.wait(timeout=30)
    print(f"{'interaction':62s} {'n':>3s} {'median s':>9s} {'max s':>7s}")
    for label, times in rows:
        print(f"{label:62s} {len(times):3d} {statistics.median(times):9.2f} {max(times):7.2f}")


def _run(pg, url: str, repeats: int) -> dict[str, list[float]]:
    def idle(timeout=120_000):
        pg.wait_for_function("() => { const a = document.querySelector('[data-testid=\"stApp\"]');"
                             " return a && a.getAttribute('data-test-script-state') === 'notRunning' }",
                             timeout=timeout)

    def timed(action, done) -> float:
        idle()
        start = time.perf_counter()
        action()
        pg.wait_for_timeout(30)                     # let the rerun start before waiting for its end
        idle()
        done()
        return time.perf_counter() - start

    results: dict[str, list[float]] = {}
    pg.goto(url + "/Models")
    pg.wait_for_selector("h1")
    idle()
    for _ in range(repeats):
        results.setdefault("Models page load (server warm)", []).append(
            timed(lambda: pg.goto(url + "/Models"), lambda: pg.wait_for_selector("[data-testid='stSelectbox']")))
    box = pg.get_by_text("Adversarial training (PGD)")
    for _ in range(2 * repeats):
        results.setdefault("rerun: a checkbox on the training form", []).append(
            timed(lambda: box.click(), lambda: None))

    def menu_option(name: str):
        """Open the data-set menu (not timed) and return its option `name`."""
        for _ in range(5):                          # the menu sometimes closes as a rerun redraws it: retry
            idle()
            pg.locator("[data-testid='stSelectbox']").first.click()
            option = pg.get_by_role("option", name=name, exact=True)
            try:
                option.wait_for(timeout=3_000)
                return option
            except Exception:
                pg.keyboard.press("Escape")
        raise RuntimeError(f"could not open the menu to choose {name}")

    order = list(DATA_SETS)[1:] + list(DATA_SETS)[:1]
    for i in range(repeats + 1):
        for name in order:
            label = "data set switch, first of the process" if i == 0 and name != order[-1] else "data set switch"
            option = menu_option(name)
            results.setdefault(f"{label}", []).append(
                timed(lambda: option.click(), lambda: pg.get_by_text(DATA_SETS[name], exact=False).first.wait_for()))
    return results


if __name__ == "__main__":
    main()
