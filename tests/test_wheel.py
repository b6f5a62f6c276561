"""The installable package (issue 24): a wheel built from the repository holds one top-level package,
`lenscape`, with the app's pages, assets and Streamlit settings inside it; installed into a fresh
virtual environment, its `lenscape app` serves the app from the installed copy, away from the checkout."""

import json
import os
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

from tests.browser import browser_page, free_port, screenshots_dir, settle

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q", "-w", str(dist)],
        check=True,
        cwd=dist,
        timeout=300,
    )
    (whl,) = dist.glob("lenscape-*.whl")
    return whl


def test_the_wheel_holds_one_package_and_the_app(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if ".dist-info/" not in n}
    assert tops == {"lenscape"}, tops
    pages = sorted(p.name for p in (ROOT / "pages").glob("*.py"))
    for path in [
        "lenscape/__init__.py",
        "lenscape/errors.py",
        "lenscape/cli.py",
        "lenscape/app.py",
        "lenscape/.streamlit/config.toml",
        "lenscape/assets/hover_scatter/index.html",
        "lenscape/analysis/similarity.py",
        "lenscape/backend/jobs.py",
        "lenscape/models/zoo.py",
        "lenscape/ui/serve.py",
        *(f"lenscape/pages/{p}" for p in pages),
    ]:
        assert path in names, path
    assert not any(n.startswith(("lenscape/tests/", "lenscape/bench/")) for n in names)
    meta = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "lenscape = lenscape.cli:main" in zipfile.ZipFile(wheel).read(meta).decode()


def test_installed_from_the_wheel_lenscape_app_serves_the_app(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "-q", str(wheel)],
        check=True,
        timeout=300,
    )
    # the dependencies (torch, streamlit, ...) from this environment, not Lenscape itself: the editable
    # install's finder lives in a .pth file of that folder, which a path listed here does not run
    site = Path(
        subprocess.check_output(
            [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], text=True
        ).strip()
    )
    (site / "_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(LENSCAPE_HOME=str(tmp_path / "home"))
    where = json.loads(
        subprocess.check_output(
            [
                str(py),
                "-c",
                "import json, lenscape, lenscape.analysis, lenscape.ui.serve as s; "
                "print(json.dumps([lenscape.analysis.__file__, str(s.APP)]))",
            ],
            cwd=tmp_path,
            env=env,
            text=True,
        )
    )
    assert all(p.startswith(str(site)) for p in where), where  # the installed copy, not the checkout

    port = free_port()
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen(
        [str(venv / "bin" / "lenscape"), "app", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            try:
                socket.create_connection(("localhost", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.5)
        assert proc.poll() is None, (tmp_path / "server.log").read_text()
        url = f"http://localhost:{port}"
        assert urllib.request.urlopen(f"{url}/_stcore/health", timeout=30).read() == b"ok"
        with browser_page({"width": 1300, "height": 1100}) as page:
            page.goto(url)
            settle(page)
            assert page.locator("h1").first.inner_text().strip() == "Lenscape"
            nav = page.locator("[data-testid='stSidebarNav']").inner_text()
            assert all(p in nav for p in ("Models", "Saliency", "Similarity", "Runs")), nav
            page.screenshot(path=str(screenshots_dir() / "installed-wheel-home.png"))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
    served = (tmp_path / "server.log").read_text()
    assert "Traceback" not in served, served
