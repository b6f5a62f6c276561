"""Finding 15 (issue 21): the cluster is the server's setting. The sidebar shows where jobs run and
offers nothing to change it; a cluster that cannot be reached is given up within the timeout with a
message on every page; Ray Client addresses are refused with a reason; a local Ray that listens
beyond loopback is said to."""

import os
import re
import subprocess
import sys
import time

import pytest
from streamlit.testing.v1 import AppTest

from apphelpers import ROOT, ROOT_APP

ray = pytest.importorskip("ray")


def test_a_page_cannot_choose_the_cluster():
    at = AppTest.from_file(ROOT_APP, default_timeout=120).run()
    assert not at.exception
    captions = " ".join(c.value for c in at.sidebar.caption)
    assert "Compute:" in captions and "Jobs' pieces run on" not in captions
    assert "LENSCAPE_RAY_ADDRESS" in captions and "a page cannot change where jobs run" in captions
    assert not [t for t in at.sidebar.text_input] and not [b for b in at.sidebar.button]


def test_a_ray_client_address_is_refused_with_a_reason_and_jobs_run_here(monkeypatch):
    monkeypatch.setenv("LENSCAPE_RAY_ADDRESS", "ray://head:10001")
    at = AppTest.from_file(ROOT_APP, default_timeout=120).run()
    assert not at.exception
    warnings = " ".join(w.value for w in at.sidebar.warning)
    assert "not supported" in warnings and "Jobs run on this machine" in warnings
    from lenscape.ui.common import backend

    assert backend().pieces is None


def test_an_unreachable_cluster_is_given_up_within_the_timeout():
    """In a process of its own: the connect left hanging behind must not be this test process's."""
    code = (
        "import time; from lenscape.backend.runner import open_backend; t = time.time(); r = open_backend(); "
        "print(round(time.time() - t, 1), type(r).__name__, '|', r.notice)"
    )
    env = {**os.environ, "LENSCAPE_RAY_ADDRESS": "10.255.255.1:6379", "LENSCAPE_RAY_TIMEOUT": "4"}
    started = time.time()
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert time.time() - started < 60, "the app waited on an unreachable cluster"
    assert "LocalRunner |" in out.stdout and "was not used" in out.stdout, out.stdout + out.stderr[-2000:]


def test_a_local_ray_says_whether_it_can_be_reached_from_the_network(ray_instance, tmp_path):
    from lenscape.backend.cluster import exposed_ports
    from lenscape.backend.runner import RayRunner
    from lenscape.backend.store import ResultStore

    runner = RayRunner(ResultStore(tmp_path / "store"), "local")
    try:
        ports = exposed_ports()
        assert bool(runner.notice) == bool(ports)
        if ports:  # Ray 2.60: every interface
            assert "listens on" in runner.notice and ports[0] in runner.notice
    finally:
        runner.shutdown()


def test_without_ray_the_page_says_how_to_install_it_and_jobs_run_here(monkeypatch):
    """Ray is the [cluster] extra: a server asked for a cluster without it runs jobs here and says why,
    and the sidebar tells whoever runs the server what to install."""
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    monkeypatch.setenv("LENSCAPE_RAY_ADDRESS", "local")
    at = AppTest.from_file(ROOT_APP, default_timeout=120).run()
    assert not at.exception
    said = " ".join(w.value for w in at.sidebar.warning) + " ".join(c.value for c in at.sidebar.caption)
    said = re.sub(r"\\(.)", r"\1", said)  # as a reader sees the Markdown
    assert said.count('pip install "lenscape[cluster]"') >= 2 and "Jobs run on this machine" in said
    from lenscape.ui.common import backend

    assert backend().pieces is None
