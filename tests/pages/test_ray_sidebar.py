"""The sidebar says where jobs run, and a Ray cluster chosen there takes the jobs' pieces."""

import pytest
from streamlit.testing.v1 import AppTest

from apphelpers import ROOT_APP, run_until

ray = pytest.importorskip("ray")


def test_the_sidebar_moves_jobs_to_a_ray_cluster_and_back(trained_run):
    trained_run("digits-mlp")
    at = AppTest.from_file(ROOT_APP, default_timeout=120).run()
    captions = " ".join(c.value for c in at.sidebar.caption)
    assert "Compute:" in captions and "Jobs' pieces run on" not in captions
    at.text_input(key="_ray.address").set_value("no such cluster").run()
    at.button(key="_ray.use").click().run()
    assert any("Could not use the Ray cluster 'no such cluster'" in e.value and "ray://host:port" in e.value
               for e in at.error)
    try:
        at.text_input(key="_ray.address").set_value("local").run()
        at.button(key="_ray.use").click().run()
        at.run()
        captions = " ".join(c.value for c in at.sidebar.caption)
        import os
        cpus = os.cpu_count()
        assert f"Jobs' pieces run on:** Ray cluster (started here): 1 node, {cpus:g} CPUs, 0 GPUs" in captions, captions
        from ui.common import backend
        assert backend().pieces is not None and backend().device_label.startswith("ray (local")
        at.button(key="_ray.local").click().run()
        at.run()
        assert "Jobs' pieces run on" not in " ".join(c.value for c in at.sidebar.caption)
        assert backend().pieces is None
    finally:
        ray.shutdown()
