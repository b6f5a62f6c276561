"""How long the app takes to answer an interaction that starts no job, in a real browser.

Starts the app on a fresh workspace, drives headless Chromium, and times each interaction from the
click until the app reports its script finished (`data-test-script-state` = notRunning) and the
page shows what the interaction asked for. Display-only changes of the Saliency grid with 9 methods
(sign, blended or heat map) are timed until the browser has drawn the new figure. Each row's median
is printed as a ratio to the baseline measured in the same run: a rerun of the Models page (a
checkbox on the training form).

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
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
DATA_SETS = {
    "scikit-learn digits (8×8, always available)": "1,437 training",
    "MNIST": "60,000 training",
    "CIFAR-10": "50,000 training",
}


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
    env = {
        **os.environ,
        "LENSCAPE_HOME": home,
        "LENSCAPE_DATA": os.environ.get("LENSCAPE_DATA", str(ROOT.parent / "shared" / "data")),
    }
    run_id = _train_cnn(env)
    rows: list[tuple[str, list[float]]] = []
    # twice on the same workspace: the first server decodes the data sets into the workspace's cache,
    # the second (a restart) loads them from it
    for when in ("fresh workspace", "server restarted"):
        port = _port()
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lenscape",
                "app",
                "--server.port",
                str(port),
                "--server.address",
                "127.0.0.1",
                "--server.headless",
                "true",
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
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
                rows += [
                    (f"{when}: {label}", times) for label, times in _saliency(pg, url, run_id, args.repeats).items()
                ]
                browser.close()
        finally:
            server.terminate()
            server.wait(timeout=30)
    base = statistics.median(next(t for label, t in rows if label.endswith(BASELINE)))
    print(f"{'interaction':66s} {'n':>3s} {'median s':>9s} {'max s':>7s} {'× baseline':>10s}")
    for label, times in rows:
        print(
            f"{label:66s} {len(times):3d} {statistics.median(times):9.2f} {max(times):7.2f} "
            f"{statistics.median(times) / base:10.1f}"
        )
    print(f"baseline: the median of '{BASELINE}' in the first server, {base:.2f} s")


BASELINE = "rerun: a checkbox on the training form"
NINE = (
    "gradient,loss_gradient,gradient_x_input,smoothgrad,vargrad,integrated_gradients,guided_backprop,deeplift,occlusion"
)


def _train_cnn(env: dict) -> str:
    """A digits CNN in the bench's workspace (seconds): the model whose maps the Saliency rows draw."""
    code = (
        "from lenscape.models.training import preset, run_id_for, train_run; from lenscape.models.paths import runs_dir; "
        "cfg = preset('digits-cnn', epochs=4); train_run(cfg, runs_dir() / run_id_for(cfg)); print(run_id_for(cfg))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return out.stdout.split()[-1]


def _idle(pg, timeout=120_000) -> None:
    pg.wait_for_function(
        "() => { const a = document.querySelector('[data-testid=\"stApp\"]');"
        " return a && a.getAttribute('data-test-script-state') === 'notRunning' }",
        timeout=timeout,
    )


def _timer(pg):
    def timed(action, done) -> float:
        _idle(pg)
        start = time.perf_counter()
        action()
        pg.wait_for_timeout(30)  # let the rerun start before waiting for its end
        _idle(pg)
        done()
        return time.perf_counter() - start

    return timed


def _saliency(pg, url: str, run_id: str, repeats: int) -> dict[str, list[float]]:
    """Display-only changes of a grid of 9 methods × 6 images: the maps are stored, nothing is
    computed; timed until the browser has drawn the new figure (Plotly's afterplot, or a new plot)."""
    timed = _timer(pg)
    pg.goto(f"{url}/Saliency?model={run_id}&methods={NINE}")
    pg.get_by_text("Integrated Gradients completeness error").wait_for(timeout=600_000)
    _idle(pg)
    mark = (
        "() => document.querySelectorAll('.js-plotly-plot').forEach(p => { p.__old = true; p.__drawn = false;"
        " if (p.on) p.on('plotly_afterplot', () => { p.__drawn = true; }); })"
    )
    drawn = "() => [...document.querySelectorAll('.js-plotly-plot')].some(p => !p.__old || p.__drawn)"

    def change(locator):
        def act():
            pg.evaluate(mark)
            locator.click()

        return act

    results: dict[str, list[float]] = {}
    steps = [
        ("sign", pg.get_by_text("All", exact=True).first),
        ("sign", pg.get_by_text("Absolute", exact=True).first),
        ("blended or heat map", pg.get_by_text("heat map beside it")),
        ("blended or heat map", pg.get_by_text("blended over the image")),
    ]
    for _ in range(repeats):
        for what, locator in steps:
            results.setdefault(f"display only, 9 methods × 6 images: {what}", []).append(
                timed(change(locator), lambda: pg.wait_for_function(drawn, timeout=120_000))
            )
    return results


def _run(pg, url: str, repeats: int) -> dict[str, list[float]]:
    timed = _timer(pg)
    idle = lambda: _idle(pg)  # noqa: E731

    results: dict[str, list[float]] = {}
    pg.goto(url + "/Models")
    pg.wait_for_selector("h1")
    idle()
    for _ in range(repeats):
        results.setdefault("Models page load (server warm)", []).append(
            timed(lambda: pg.goto(url + "/Models"), lambda: pg.wait_for_selector("[data-testid='stSelectbox']"))
        )
    box = pg.get_by_text("Adversarial training (PGD)")
    for _ in range(2 * repeats):
        results.setdefault("rerun: a checkbox on the training form", []).append(
            timed(lambda: box.click(), lambda: None)
        )

    def menu_option(name: str):
        """Open the data-set menu (not timed) and return its option `name`."""
        for _ in range(5):  # the menu sometimes closes as a rerun redraws it: retry
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
                timed(lambda: option.click(), lambda: pg.get_by_text(DATA_SETS[name], exact=False).first.wait_for())
            )
    return results


if __name__ == "__main__":
    main()
