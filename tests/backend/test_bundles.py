"""Reproducibility bundles: a saliency result exported from one workspace and imported into a fresh
one reopens there without recomputing; a changed result or changed weights are refused and nothing
is written."""

import io
import json
import zipfile

import numpy as np
import pytest

from lenscape.analysis.saliency import SaliencyConfig
from lenscape.backend.bundles import export_bundle, import_bundle
from lenscape.backend.jobs import JobStatus, job, ref
from lenscape.backend.runner import LocalRunner
from lenscape.backend.saliency_tasks import GridConfig
from lenscape.backend.store import ResultStore
from lenscape.errors import InvalidInputError
from lenscape.models.zoo import list_runs, load_model


def _rezip(data: bytes, name: str, change) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as zin, zipfile.ZipFile(out, "w") as zout:
        for item in zin.infolist():
            raw = zin.read(item)
            zout.writestr(item, change(raw) if item.filename.endswith(name) else raw)
    return out.getvalue()


def test_a_result_travels_to_another_workspace_and_reopens_there(
    runner, trained_run, wait_for_job, tmp_path, lenscape_home
):
    (rec,) = trained_run("digits-mlp", epochs=2)
    lm = load_model(rec["run_id"])
    r = ref(lm)
    the_job = job("saliency", GridConfig(model=r, indices=(0, 4), methods=(SaliencyConfig(method="gradient"),)), (r,))
    job_id = runner.submit(the_job)
    original = wait_for_job(job_id)
    data = export_bundle(runner.store, job_id, lenscape_home / "runs")
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        manifest = json.loads(z.read("manifest.json"))
        assert set(z.namelist()) == {
            "manifest.json",
            "result.npz",
            f"models/{rec['run_id']}/run.json",
            f"models/{rec['run_id']}/{rec['checkpoints'][-1]['file']}",
        }
    assert manifest["kind"] == "saliency" and manifest["config"]["indices"] == [0, 4]
    assert manifest["models"][0]["recipe"]["seed"] == 0 and manifest["versions"]["torch"]
    assert manifest["fingerprints"] == [lm.fingerprint]

    other = ResultStore(tmp_path / "other" / "store")
    other_runs = tmp_path / "other" / "runs"
    with pytest.raises(InvalidInputError, match="checksum"):
        import_bundle(other, _rezip(data, "result.npz", lambda b: b[:-1] + bytes([b[-1] ^ 1])), other_runs)
    with pytest.raises(InvalidInputError, match="fingerprint"):
        import_bundle(other, _rezip(data, ".safetensors", lambda b: b[:-4] + b"\x00\x00\x80\x3f"), other_runs)
    with pytest.raises(InvalidInputError, match="not a Lenscape bundle"):
        import_bundle(other, b"PK not really", other_runs)
    assert other.list() == [] and not other_runs.exists()  # nothing written by a refused bundle

    back = import_bundle(other, data, other_runs)
    assert back["job_id"] == job_id
    (copied,) = list_runs(other_runs)
    assert copied["run_id"] == rec["run_id"] and [c["fingerprint"] for c in copied["checkpoints"]] == [lm.fingerprint]
    again = LocalRunner(other)
    try:
        assert again.submit(the_job) == job_id and again.status(job_id) == JobStatus.DONE  # found, not recomputed
        res = again.result(job_id)
    finally:
        again.shutdown()
    assert np.array_equal(res[0].attributions, original[0].attributions)
    assert other.get(job_id)["message"] == "imported from a bundle"
    with pytest.raises(InvalidInputError, match="no stored result"):
        export_bundle(other, "nope", other_runs)
