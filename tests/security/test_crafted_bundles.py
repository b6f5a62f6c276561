"""Findings 1, 4, 5 and 6: bundles as an attacker would make them. Whoever makes a bundle computes
its checksum, its fingerprints and its job id, so each crafted bundle here is made consistent the
way an attacker would (the job id with the formula written out below, not Lenscape's own code);
what must stop it is import's own checks. Each test also looks at the disk: nothing written outside
the workspace, nothing replaced, nothing left behind by a refused import."""

from __future__ import annotations

import copy
import hashlib
import io
import json
import tracemalloc
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save as safetensors_save

from lenscape.analysis.saliency import SaliencyConfig
from lenscape.backend.bundles import export_bundle, import_bundle
from lenscape.backend.codec import encode
from lenscape.backend.jobs import job, ref
from lenscape.backend.saliency_tasks import GridConfig
from lenscape.backend.store import ResultStore
from lenscape.models.architectures import ArchSpec, build_model
from lenscape.models.checkpoints import model_fingerprint
from lenscape.models.data import DataSpec
from lenscape.errors import InvalidInputError
from lenscape.models.zoo import import_model, list_runs, load_model

ARCH = ArchSpec(name="mlp", widths=(16,), in_shape=(1, 8, 8), num_classes=10, mean=(0.3,), std=(0.3,))


def job_id_of(m: dict) -> str:
    """backend.jobs.Job.key as an attacker reads it off the source: what the importer must recompute."""
    payload = {
        "kind": m["kind"],
        "code": m["code_version"],
        "fingerprints": m["fingerprints"],
        "data": m["data"],
        "config": m["config"],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:24]


@dataclass
class Parts:
    """An honest bundle taken apart: what a crafted one is made of."""

    manifest: dict
    result: bytes
    run: dict
    weights: bytes

    def copy(self) -> Parts:
        return Parts(copy.deepcopy(self.manifest), self.result, copy.deepcopy(self.run), self.weights)

    def zip(
        self,
        rehash: bool = True,
        extra: list[tuple[str, bytes]] = (),
        manifest_bytes: bytes | None = None,
        method=zipfile.ZIP_DEFLATED,
    ) -> bytes:
        m = self.manifest
        if rehash:  # what the attacker does: a checksum and a job id that fit
            m["checksum"] = hashlib.sha256(self.result).hexdigest()
            m["job_id"] = job_id_of(m)
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", method) as z:
            z.writestr("manifest.json", manifest_bytes if manifest_bytes is not None else json.dumps(m))
            z.writestr("result.npz", self.result)
            for model in m["models"] if isinstance(m["models"], list) else []:
                z.writestr(f"models/{model['run_id']}/run.json", json.dumps(self.run))
                z.writestr(f"models/{model['run_id']}/{model['file']}", self.weights)
            for name, raw in extra:
                z.writestr(name, raw)
        return out.getvalue()

    def rename(self, run_id: str | None = None, file: str | None = None) -> Parts:
        """The model under another run id / checkpoint file name, consistently in manifest and run.json."""
        model = self.manifest["models"][0]
        model["run_id"] = self.run["run_id"] = run_id or model["run_id"]
        model["file"] = self.run["checkpoints"][0]["file"] = file or model["file"]
        return self

    def reweight(self, seed: int) -> Parts:
        """Other weights of the same architecture, with their honest fingerprint everywhere."""
        torch.manual_seed(seed)
        model = build_model(ARCH)
        fp = model_fingerprint(model)
        self.weights = safetensors_save({k: v.contiguous() for k, v in model.state_dict().items()})
        old = self.manifest["models"][0]["fingerprint"]
        self.manifest["fingerprints"] = [fp if f == old else f for f in self.manifest["fingerprints"]]
        self.manifest["models"][0]["fingerprint"] = self.run["checkpoints"][0]["fingerprint"] = fp
        self.manifest["config"] = json.loads(json.dumps(self.manifest["config"]).replace(old, fp))
        return self


def _parts(data: bytes) -> Parts:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        manifest = json.loads(z.read("manifest.json"))
        (model,) = manifest["models"]
        return Parts(
            manifest,
            z.read("result.npz"),
            json.loads(z.read(f"models/{model['run_id']}/run.json")),
            z.read(f"models/{model['run_id']}/{model['file']}"),
        )


@pytest.fixture
def honest(runner, wait_for_job, lenscape_home) -> Parts:
    """A real bundle of a real saliency result of an (untrained) digits MLP, taken apart."""
    torch.manual_seed(0)
    model = build_model(ARCH)
    rec = import_model(model, ARCH, "tiny", DataSpec(name="digits"), tuple(map(str, range(10))), source="test")
    r = ref(load_model(rec["run_id"]))
    job_id = runner.submit(
        job("saliency", GridConfig(model=r, indices=(0, 1), methods=(SaliencyConfig(method="gradient"),)), (r,), "maps")
    )
    wait_for_job(job_id)
    return _parts(export_bundle(runner.store, job_id, lenscape_home / "runs"))


@pytest.fixture
def other(tmp_path) -> tuple[ResultStore, Path]:
    """Another, empty workspace to import into: its store and runs folder."""
    return ResultStore(tmp_path / "other" / "store"), tmp_path / "other" / "runs"


def _tree(path: Path) -> dict[str, bytes]:
    """Every file under `path` with its bytes (the SQLite index's by its rows, which is what counts)."""
    if not path.exists():
        return {}
    return {
        str(p.relative_to(path)): p.read_bytes()
        for p in sorted(path.rglob("*"))
        if p.is_file() and not p.name.startswith("index.sqlite")
    }


def _refused(store: ResultStore, runs: Path, data: bytes, match: str | None = None) -> str:
    """Import `data`, which must be refused with nothing written anywhere in the workspace."""
    before, rows = (_tree(store.root), _tree(runs)), store.list()
    with pytest.raises(InvalidInputError, match=match) as err:
        import_bundle(store, data, runs)
    assert (_tree(store.root), _tree(runs)) == before, "a refused bundle changed the workspace"
    assert store.list() == rows, "a refused bundle left a row in the job index"
    return str(err.value)


def _refused_peak(store: ResultStore, runs: Path, data: bytes, match: str | None = None) -> tuple[str, int]:
    """_refused, with the peak of the memory Python allocated while refusing (bytes)."""
    tracemalloc.start()
    try:
        message = _refused(store, runs, data, match)
        return message, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# ---------------------------------------------------------------------------------------------
# 1. Writes outside the workspace


@pytest.mark.parametrize("where", ["run_id", "file", "job_id"])
def test_names_in_a_manifest_cannot_reach_outside_the_workspace(honest, other, tmp_path, where):
    store, runs = other
    outside = tmp_path / "on_sys_path"  # e.g. a site-packages folder: a .pth there runs at start-up
    outside.mkdir()
    parts = honest.copy()
    rel = "../" * (len(runs.parts) + 2) + str(outside).lstrip("/")
    if where == "run_id":
        parts.rename(run_id=f"{rel}/evil")
    elif where == "file":
        parts.rename(file=str(outside / "evil.pth"))
    data = parts.zip()
    if where == "job_id":
        parts.manifest["job_id"] = f"{rel}/evil"
        data = parts.zip(rehash=False)
    _refused(store, runs, data)
    assert list(outside.rglob("*")) == [], "the bundle wrote outside the workspace"
    assert not list(tmp_path.glob("**/evil*")), "the bundle wrote a file named by its manifest"


def test_a_job_id_that_does_not_follow_from_the_manifest_is_refused(honest, other):
    store, runs = other
    parts = honest.copy()
    parts.manifest["job_id"] = "0" * 24  # a well-formed id of some other job
    parts.manifest["checksum"] = hashlib.sha256(parts.result).hexdigest()
    _refused(store, runs, parts.zip(rehash=False), "job id")


# ---------------------------------------------------------------------------------------------
# 4. Nothing already here is replaced


def test_a_bundle_cannot_replace_the_weights_of_a_model_here(honest, runner, lenscape_home):
    store, runs = runner.store, lenscape_home / "runs"
    model = honest.manifest["models"][0]
    ckpt = runs / model["run_id"] / model["file"]
    original = ckpt.read_bytes()
    forged = honest.copy().reweight(seed=1)  # same run id and file name, other weights
    data = forged.zip()
    assert forged.manifest["job_id"] != honest.manifest["job_id"]
    _refused(store, runs, data, "other weights|another model")
    assert ckpt.read_bytes() == original
    assert load_model(model["run_id"]).fingerprint == model["fingerprint"]


def test_a_bundle_cannot_replace_a_stored_result(honest, runner, lenscape_home):
    store, runs = runner.store, lenscape_home / "runs"
    job_id = honest.manifest["job_id"]
    stored = store.path(job_id).read_bytes()
    forged = honest.copy()
    forged.result = encode([])  # consistent checksum, same job id, other content
    data = forged.zip()
    assert forged.manifest["job_id"] == job_id
    _refused(store, runs, data)
    assert store.path(job_id).read_bytes() == stored


def test_the_same_bundle_twice_is_a_no_op(honest, other):
    store, runs = other
    data = honest.copy().zip()
    import_bundle(store, data, runs)
    files, rows = (_tree(store.root), _tree(runs)), store.list()
    import_bundle(store, data, runs)
    assert (_tree(store.root), _tree(runs)) == files and store.list() == rows


def test_duplicate_entry_names_are_refused(honest, other):
    store, runs = other
    parts = honest.copy()
    data = parts.zip(extra=[("result.npz", encode([]))])  # a second result.npz after the real one
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        assert [i.filename for i in z.infolist()].count("result.npz") == 2
    _refused(store, runs, data, "twice")


def test_a_manifest_whose_kind_does_not_match_its_result_is_refused(honest, other):
    store, runs = other
    parts = honest.copy()
    parts.manifest["kind"] = "model_summary"
    parts.manifest["config"] = {
        "__type__": "lenscape.backend.tasks:SummaryJobConfig",
        "model": parts.manifest["config"]["model"],
        "summary": {
            "__type__": "lenscape.analysis.summary:SummaryConfig",
            "max_eval": 2000,
            "n_samples": 12,
            "seed": 0,
        },
    }
    _refused(store, runs, parts.zip(), "not what a model_summary job returns")


def test_a_manifest_whose_config_does_not_match_its_result_is_refused(honest, other):
    store, runs = other
    parts = honest.copy()
    parts.manifest["config"]["methods"][0]["method"] = "smoothgrad"  # the maps are plain gradients
    _refused(store, runs, parts.zip(), "config")


# ---------------------------------------------------------------------------------------------
# 5. All or nothing


def test_an_unreadable_result_writes_nothing(honest, other):
    store, runs = other
    parts = honest.copy()
    parts.result = b"PK\x03\x04 not an npz at all"
    _refused(store, runs, parts.zip(), "cannot read")
    assert not runs.exists() and store.list() == []


@pytest.mark.parametrize(
    "field,value",
    [("seconds", "fast"), ("created", None), ("label", ["x"]), ("fingerprints", "abc"), ("models", {"a": 1})],
)
def test_a_malformed_manifest_writes_nothing(honest, other, field, value):
    store, runs = other
    parts = honest.copy()
    parts.manifest[field] = value
    try:
        data = parts.zip()
    except (TypeError, AttributeError):  # the attacker's own tooling chokes: zip without rehashing
        data = parts.zip(rehash=False)
    _refused(store, runs, data)
    assert not runs.exists() and store.list() == []


# ---------------------------------------------------------------------------------------------
# 6. Bounded decompression


def test_a_zip_bomb_is_refused_before_it_is_inflated(honest, other, monkeypatch):
    store, runs = other
    monkeypatch.setenv("LENSCAPE_MAX_BUNDLE_MB", "16")
    parts = honest.copy()
    parts.result = bytes(64 << 20)  # 64 MiB of zeros: 64 KiB deflated
    data = parts.zip()
    assert len(data) < 1 << 20
    message, peak = _refused_peak(store, runs, data, "limit")
    assert peak < 8 << 20, f"refusing a bomb allocated {peak / 2**20:.0f} MiB"
    assert "LENSCAPE_MAX_BUNDLE_MB" in message or "MiB" in message


def test_an_entry_that_lies_about_its_size_is_stopped_at_the_limit(honest, other, monkeypatch):
    store, runs = other
    monkeypatch.setenv("LENSCAPE_MAX_BUNDLE_MB", "16")
    parts = honest.copy()
    parts.result = bytes(64 << 20)
    data = bytearray(parts.zip())
    # set the central directory's and the local header's uncompressed size of result.npz to 1 KiB
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as z:
        info = z.getinfo("result.npz")
    local = info.header_offset
    data[local + 22 : local + 26] = (1024).to_bytes(4, "little")
    pos = 0
    while (pos := bytes(data).find(b"PK\x01\x02", pos)) >= 0:
        name_len = int.from_bytes(data[pos + 28 : pos + 30], "little")
        if bytes(data[pos + 46 : pos + 46 + name_len]) == b"result.npz":
            data[pos + 24 : pos + 28] = (1024).to_bytes(4, "little")
        pos += 4
    assert _refused_peak(store, runs, bytes(data))[1] < 8 << 20


def test_a_padded_manifest_is_refused(honest, other):
    store, runs = other
    parts = honest.copy()
    parts.manifest["checksum"] = hashlib.sha256(parts.result).hexdigest()
    parts.manifest["job_id"] = job_id_of(parts.manifest)
    padded = json.dumps(parts.manifest).encode() + b" " * (1 << 20)  # 1 MiB of whitespace
    _refused(store, runs, parts.zip(rehash=False, manifest_bytes=padded), "limit")


def test_a_result_npz_that_is_itself_a_bomb_is_refused(honest, other, monkeypatch):
    """result.npz is a zip too: a deflated array inside it inflates on decode."""
    store, runs = other
    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        __meta__=np.frombuffer(b'{"__t__": "nd", "key": "a0"}', dtype=np.uint8),
        a0=np.zeros(32 << 20, dtype=np.uint8),
    )
    parts = honest.copy()
    parts.result = buf.getvalue()
    assert _refused_peak(store, runs, parts.zip())[1] < 16 << 20


def test_an_honest_bundle_still_imports_and_lists_its_model(honest, other):
    store, runs = other
    manifest = import_bundle(store, honest.copy().zip(), runs)
    assert manifest["job_id"] == honest.manifest["job_id"]
    (rec,) = list_runs(runs)
    assert rec["run_id"] == honest.manifest["models"][0]["run_id"]
    assert store.get(manifest["job_id"])["status"] == "DONE"
    assert store.get(manifest["job_id"])["checksum"] == honest.manifest["checksum"]


def test_a_well_formed_gradient_record_travels_with_its_run(honest, other):
    store, runs = other
    parts = honest.copy()
    parts.run["gradients"] = {
        "names": ["fc1.weight"],
        "numel": [8],
        "epochs": [1, 2],
        "clean_norm": [[1.0], [0.5]],
        "noisy_norm": [[0.1], [0.2]],
        "cosine": [[-0.5], [1.0]],
    }
    import_bundle(store, parts.zip(), runs)
    (rec,) = list_runs(runs)
    assert rec["gradients"]["cosine"] == [[-0.5], [1.0]]


# ---------------------------------------------------------------------------------------------
# What an attack review of the first fixes found (each held before this, on e00ab05 and after)


def test_a_bundle_cannot_add_a_checkpoint_to_a_model_made_here(honest, runner, lenscape_home):
    """The new epoch would become the model's default: every page would load the bundle's weights."""
    store, runs = runner.store, lenscape_home / "runs"
    rid = honest.manifest["models"][0]["run_id"]
    forged = honest.copy().reweight(seed=3)
    forged.manifest["models"][0]["epoch"] = forged.run["checkpoints"][0]["epoch"] = 7
    forged.rename(file="epoch_007.safetensors")
    _refused(store, runs, forged.zip(), "another model|not the one")
    assert load_model(rid).epoch == 0 and load_model(rid).fingerprint == honest.manifest["models"][0]["fingerprint"]


def test_a_bundle_cannot_take_the_id_another_import_will_look_for(honest, other):
    """import-<fingerprint of X> holding weights Y: a later import of X would find 'itself' there."""
    store, runs = other
    victim = honest.manifest["models"][0]["run_id"]
    forged = honest.copy().reweight(seed=4)
    forged.rename(run_id=victim)
    _refused(store, runs, forged.zip(), "not the one Lenscape gives these weights")


def test_a_bundle_cannot_take_a_recipe_s_run_id_with_another_architecture(honest, other):
    from lenscape.models.training import preset, run_id_for

    store, runs = other
    cfg = preset("digits-mlp")
    forged = honest.copy()
    forged.run["config"] = json.loads(json.dumps(cfg.to_dict()))
    forged.run["config"]["arch"] = "cnn"  # the recipe says CNN; the weights are an MLP
    forged.rename(run_id=run_id_for(type(cfg).from_dict(forged.run["config"])))
    _refused(store, runs, forged.zip(), "not the ones its recipe makes")


@pytest.mark.parametrize(
    "field,value",
    [
        ("created", "yesterday"),
        ("created", 1e300),
        ("metrics", [{"seconds": "x"}]),
        ("classes", [1, 2]),
        ("name", ["a"]),
        ("noise", {"indices": ["../x"]}),
        (
            "gradients",
            {
                "names": ["w"],
                "numel": [4],
                "epochs": [1],
                "clean_norm": [[1.0, 2.0]],
                "noisy_norm": [[1.0]],
                "cosine": [[0.5]],
            },
        ),
        (
            "gradients",
            {
                "names": ["w"],
                "numel": [4],
                "epochs": [1],
                "clean_norm": [[1.0]],
                "noisy_norm": [[1.0]],
                "cosine": [["nan"]],
            },
        ),
        ("gradients", [1, 2]),
    ],
)
def test_run_record_fields_the_pages_read_are_checked(honest, other, field, value):
    store, runs = other
    forged = honest.copy()
    forged.run[field] = value
    _refused(store, runs, forged.zip(), "run record")
    assert list_runs(runs) == []


def test_a_manifest_time_beyond_what_a_table_shows_is_refused(honest, other):
    store, runs = other
    forged = honest.copy()
    forged.manifest["created"] = 1e300
    _refused(store, runs, forged.zip(), "created")


def test_a_zip_of_a_hundred_thousand_entries_is_refused_at_once(other):
    import time

    store, runs = other
    names = [(f"e{i}", b"") for i in range(100_000)]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for name, raw in names:
            z.writestr(name, raw)
    data = out.getvalue()
    started = time.perf_counter()
    zipfile.ZipFile(io.BytesIO(data)).close()  # reading the zip's directory, which any check must do
    directory = time.perf_counter() - started
    started = time.perf_counter()
    _refused(store, runs, data, "entries")
    # refused on the directory: not a read of each entry (a machine under load slows both alike; an
    # absolute bound of 3 s failed on a busy 2-core machine at 3.7 s)
    assert time.perf_counter() - started < 3 * directory + 0.5


def test_two_checkpoints_of_one_run_travel_in_one_bundle(runner, trained_run, wait_for_job, lenscape_home, other):
    from lenscape.backend.landscape_tasks import InterpolationConfig

    (rec,) = trained_run("digits-mlp", epochs=2)
    a, b = load_model(rec["run_id"], 1), load_model(rec["run_id"], 2)
    cfg = InterpolationConfig(a=ref(a), b=ref(b), points=3, n_examples=50)
    job_id = runner.submit(job("landscape_interpolation", cfg, (ref(a), ref(b))))
    wait_for_job(job_id)
    data = export_bundle(runner.store, job_id, lenscape_home / "runs")
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        assert [n for n in z.namelist() if n.endswith("run.json")] == [f"models/{rec['run_id']}/run.json"]
    store, runs = other
    import_bundle(store, data, runs)
    (copied,) = list_runs(runs)
    assert [c["epoch"] for c in copied["checkpoints"]] == [1, 2]
    assert load_model(rec["run_id"], 2, root=runs).fingerprint == b.fingerprint


def test_the_codec_rebuilds_only_lenscape_s_own_types_and_no_empty_item_arrays():
    from lenscape.backend.codec import decode

    def npz(meta: dict, **arrays) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, __meta__=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), **arrays)
        return buf.getvalue()

    foreign = {"__t__": "dc", "type": "lenscape.models.zoo:torch.utils._pytree.TreeSpec", "fields": {}}
    with pytest.raises(ValueError, match="not a Lenscape type"):
        decode(npz(foreign))
    with pytest.raises(ValueError, match="zero-size"):
        decode(npz({"__t__": "nd", "key": "a0"}, a0=np.zeros((10, 0), dtype="V0").reshape(10, 0)))


def test_weights_holding_nan_are_refused_even_with_an_honest_fingerprint(honest, other):
    store, runs = other
    forged = honest.copy().reweight(seed=5)
    torch.manual_seed(5)
    model = build_model(ARCH)
    with torch.no_grad():
        model.fc1.weight[0, 0] = float("nan")
    fp = model_fingerprint(model)
    forged.weights = safetensors_save({k: v.contiguous() for k, v in model.state_dict().items()})
    old = forged.manifest["models"][0]["fingerprint"]
    forged.manifest["fingerprints"] = [fp]
    forged.manifest["models"][0]["fingerprint"] = forged.run["checkpoints"][0]["fingerprint"] = fp
    forged.manifest["config"] = json.loads(json.dumps(forged.manifest["config"]).replace(old, fp))
    forged.rename(run_id=f"import-{fp}")
    _refused(store, runs, forged.zip(), "NaN or Inf")


def test_a_bundle_from_before_a_config_gained_a_field_still_imports(honest, other):
    """A config field added later (with its default) is absent from older manifests: the config is
    rebuilt with the default and still reads back as written; its job id is the manifest's own."""
    store, runs = other
    older = honest.copy()
    cfg = older.manifest["config"]
    dropped = next(k for k in cfg if k not in ("__type__", "model", "indices", "methods"))
    del cfg[dropped]
    manifest = import_bundle(store, older.zip(), runs)
    assert manifest["job_id"] == job_id_of(older.manifest) != honest.manifest["job_id"]
    assert store.get(manifest["job_id"])["status"] == "DONE"
    # a field the manifest does give must still read back exactly
    changed = honest.copy()
    changed.manifest["config"]["methods"][0]["__type__"] = "lenscape.backend.saliency_tasks.GridConfig"
    _refused(store, runs, changed.zip())
