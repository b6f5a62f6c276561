"""A workspace or bundle from before Lenscape was one package (`analysis.x`, not `lenscape.analysis.x`)
keeps working: stored results and configs name their types by the old module names, and read back as
today's types; old bundles import; results whose key changed are computed again, never an error."""

import io
import json
import re
import zipfile

import numpy as np
import pytest

from lenscape.analysis.saliency import SaliencyConfig
from lenscape.analysis.summary import SummaryConfig
from lenscape.backend.bundle_checks import rebuild
from lenscape.backend.bundles import import_bundle
from lenscape.backend.codec import decode, encode, to_jsonable
from lenscape.backend.jobs import ModelRef
from lenscape.backend.saliency_tasks import GridConfig
from lenscape.backend.store import ResultStore
from tests.security import test_crafted_bundles as crafted

honest = crafted.honest  # the fixture: a real bundle of a real saliency result, taken apart
job_id_of = crafted.job_id_of

OLD = re.compile(r'"lenscape\.(analysis|backend|models)\.')


def _as_before(text: str) -> str:
    """JSON as a workspace before the move wrote it: `analysis.saliency:T`, not `lenscape.analysis.saliency:T`."""
    return OLD.sub(r'"\1.', text)


def _result_as_before(raw: bytes) -> bytes:
    with np.load(io.BytesIO(raw), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = _as_before(bytes(arrays.pop("__meta__")).decode())
    out = io.BytesIO()
    np.savez(out, **{"__meta__": np.frombuffer(meta.encode(), dtype=np.uint8), **arrays})
    return out.getvalue()


def test_results_and_configs_stored_with_the_old_names_read_as_today_s_types():
    ref = ModelRef(run_id="run-1", epoch=2, fingerprint="ab" * 8)
    cfg = GridConfig(
        model=ref, indices=(0, 3), methods=(SaliencyConfig(method="gradient"), SaliencyConfig(method="smoothgrad"))
    )
    old = json.loads(_as_before(json.dumps(to_jsonable(cfg))))
    assert old["__type__"] == "backend.saliency_tasks:GridConfig" and old["methods"][0]["__type__"].startswith(
        "analysis."
    )
    assert rebuild(old) == cfg
    result = {"config": SummaryConfig(n_samples=3), "values": np.arange(4.0)}
    raw = _result_as_before(encode(result))
    assert b"lenscape." not in raw and b"analysis.summary:SummaryConfig" in raw
    back = decode(raw)
    assert back["config"] == SummaryConfig(n_samples=3) and np.array_equal(back["values"], np.arange(4.0))


def test_an_old_name_outside_our_packages_is_still_refused():
    with pytest.raises(ValueError, match="not a Lenscape type"):
        rebuild({"__type__": "os:PathLike"})
    raw = _result_as_before(encode({"x": SummaryConfig()})).replace(
        b"analysis.summary:SummaryConfig", b"subprocess.x:Popen"
    )
    with pytest.raises(ValueError):
        decode(raw)


def test_a_bundle_exported_before_the_move_imports(honest, tmp_path):
    parts = honest.copy()
    parts.manifest["config"] = json.loads(_as_before(json.dumps(parts.manifest["config"])))
    parts.result = _result_as_before(parts.result)
    data = parts.zip()
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        assert b"lenscape.analysis" not in z.read("manifest.json") and b"lenscape." not in z.read("result.npz")
    store = ResultStore(tmp_path / "other" / "store")
    manifest = import_bundle(store, data, tmp_path / "other" / "runs")
    assert manifest["job_id"] == job_id_of(parts.manifest)
    maps = store.get_result(manifest["job_id"])
    assert maps[0].config.method == "gradient" and type(maps[0].config) is SaliencyConfig
