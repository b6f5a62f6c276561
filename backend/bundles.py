"""Reproducibility bundles: one stored result with everything needed to trust it and reopen it in
another Lenscape. A bundle is a zip of

- `manifest.json`: the job's kind, label, config, model fingerprints, data selection, the device and
  library versions it ran with, when and how long, the result's checksum, the code version of its
  kind, and for each model its run id, name, recipe (seeds included) and checkpoint;
- `result.npz`: the stored result, byte for byte (the store's own encoding, no pickle);
- `models/<run_id>/run.json` and the checkpoint file (safetensors) of each model the job used.

Importing treats the bundle as an attacker would send it (backend/bundle_checks.py): only the
expected entries, each bounded and streamed; ids and file names of a strict form; the job id
recomputed from kind, code version, fingerprints, data and config; the result decoded and of its
kind's type, with the config the manifest names; every checkpoint's fingerprint recomputed from
its weights. Only then is anything written, through a staging folder, and never over what is
there: the same content again is a no-op, different content under an existing name is refused. The
result is filed under its job id, so the pages that submit the same job find it without recomputing
(when both sides run the same code version of that kind)."""

from __future__ import annotations

import io
import json
import os
import shutil
import time
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from backend import bundle_checks as checks
from backend.jobs import REGISTRY, code_version
from backend.store import ResultStore
from models.checkpoints import model_fingerprint, read_json, write_json
from models.errors import InvalidInputError
from models.paths import runs_dir
from models.zoo import list_runs

FORMAT = "lenscape-bundle/1"


def _checkpoints_by_fingerprint(root: Path) -> dict[str, tuple[dict, dict]]:
    return {ck["fingerprint"]: (rec, ck) for rec in list_runs(root) for ck in rec.get("checkpoints", [])}


def export_bundle(store: ResultStore, job_id: str, root: Path | None = None) -> bytes:
    """The zip bytes of job `job_id`'s bundle; InvalidInputError if it has no readable result."""
    root = root or runs_dir()
    row = store.get(job_id)
    if not row or row["status"] != "DONE" or not store.has_valid_result(job_id):
        raise InvalidInputError(f"job {job_id} has no stored result to export")
    where = _checkpoints_by_fingerprint(root)
    models = []
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for fp in json.loads(row["fingerprints"] or "[]"):
            if fp not in where:
                raise InvalidInputError(f"the model with fingerprint {fp} is no longer in the workspace")
            rec, ck = where[fp]
            z.write(root / rec["run_id"] / ck["file"], f"models/{rec['run_id']}/{ck['file']}")
            z.writestr(f"models/{rec['run_id']}/run.json", json.dumps(rec, indent=1))
            models.append({"run_id": rec["run_id"], "name": rec["name"], "epoch": ck["epoch"], "fingerprint": fp,
                           "file": ck["file"], "recipe": rec.get("config"), "seed": rec.get("seed")})
        manifest = {"format": FORMAT, "job_id": job_id, "kind": row["kind"], "label": row["label"],
                    "code_version": _exported_code(row),
                    "config": json.loads(row["config"]), "fingerprints": json.loads(row["fingerprints"] or "[]"),
                    "data": json.loads(row["data"]) if row["data"] else None, "device": row["device"],
                    "versions": json.loads(row["versions"]) if row["versions"] else {}, "created": row["created"],
                    "seconds": row["seconds"], "checksum": row["checksum"], "models": models,
                    "exported": time.time()}
        z.writestr("manifest.json", json.dumps(manifest, indent=1))
        z.write(store.path(job_id), "result.npz")
    return buf.getvalue()


def _exported_code(row: dict) -> str:
    """The code version the job was computed with: recorded with it, or (a store from before that
    was recorded) today's, if it gives back the job's id; otherwise the bundle could not be checked."""
    code = row.get("code") or (code_version(row["kind"]) if row["kind"] in REGISTRY else None)
    probe = {"kind": row["kind"], "code_version": code, "fingerprints": json.loads(row["fingerprints"] or "[]"),
             "data": json.loads(row["data"]) if row["data"] else None, "config": json.loads(row["config"])}
    if code is None or checks.job_id_of(probe) != row["id"]:
        raise InvalidInputError(f"job {row['id']} was computed by another version of Lenscape's code than this one "
                                "and its id cannot be checked by an importer: compute it again to export it")
    return code


def read_manifest(data) -> dict:
    """The checked manifest of bundle `data` (bytes, a path or a binary file)."""
    bundle = _open(data)
    try:
        return _manifest(bundle)
    finally:
        bundle.close()


def _open(data) -> checks.BundleZip:
    return checks.BundleZip(io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data)


def _manifest(bundle: checks.BundleZip) -> dict:
    try:
        manifest = json.loads(bundle.read("manifest.json", checks.MAX_MANIFEST))
    except (ValueError, RecursionError) as exc:
        raise InvalidInputError(f"not a Lenscape bundle (its manifest is not JSON: {exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        got = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise InvalidInputError(f"not a Lenscape bundle of format {FORMAT}: {str(got)[:60]!r}")
    checks.check_manifest(manifest)
    if checks.job_id_of(manifest) != manifest["job_id"]:
        raise InvalidInputError("the bundle's job id does not follow from its kind, code version, models, data and "
                                "config: it was changed, and is refused")
    expected = {"manifest.json", "result.npz"} | {f"models/{m['run_id']}/{n}" for m in manifest["models"]
                                                  for n in ("run.json", m["file"])}
    if bundle.names() - expected:
        raise InvalidInputError(f"the bundle holds entries a bundle does not have: {sorted(bundle.names() - expected)[:3]}")
    return manifest


@dataclass
class _Incoming:
    """A model the workspace lacks, checked and written into the staging folder."""

    entry: dict                 # the manifest's models[] entry
    record: dict                # the run.json to write (this checkpoint only, unless merged)
    staged: Path                # the checkpoint in the staging folder


def import_bundle(store: ResultStore, data, root: Path | None = None) -> dict:
    """File a bundle's result and models in this workspace; returns its manifest. All or nothing:
    every check passes before anything is written, and a failure while writing takes back what was
    written. Identical content already here is a no-op; different content under an existing name
    (a run's checkpoint, a job's result) is refused."""
    root = root or runs_dir()
    stage = store.root / f".bundle-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    bundle = _open(data)
    try:
        manifest = _manifest(bundle)
        stage.mkdir()
        raw = _checked_result(bundle, manifest, stage)
        existing = _existing_result(store, manifest)
        incoming = _checked_models(bundle, manifest, root, stage)
        if existing and not incoming:
            return manifest                            # everything in it is here already
        _install(store, manifest, raw, incoming, root, write_result=not existing)
        return manifest
    finally:
        bundle.close()
        shutil.rmtree(stage, ignore_errors=True)


def _checked_result(bundle: checks.BundleZip, manifest: dict, stage: Path) -> bytes:
    limit = checks.max_bundle_bytes()
    digest = bundle.extract("result.npz", stage / "result.npz", limit)
    if digest != manifest["checksum"]:
        raise InvalidInputError("the bundle's result does not match its checksum: it was changed or damaged")
    raw = (stage / "result.npz").read_bytes()
    result = _decoded_check(raw)
    checks.check_config(manifest)
    checks.check_result(result, manifest)
    return raw


def _existing_result(store: ResultStore, manifest: dict) -> bool:
    """True if this very result is stored already; InvalidInputError if another is, or the job runs."""
    row = store.get(manifest["job_id"])
    if not row:
        return False
    if row["status"] in ("QUEUED", "RUNNING"):
        raise InvalidInputError(f"job {manifest['job_id']} is being computed here right now; import it later")
    if row["status"] == "DONE" and store.has_valid_result(manifest["job_id"]):
        if row["checksum"] != manifest["checksum"]:
            raise InvalidInputError(f"this workspace holds another result under job id {manifest['job_id']}; "
                                    "nothing was imported (delete that one on the Runs page first to replace it)")
        return True
    return False                                     # failed, cancelled or lost: the bundle's fills the place


def _checked_models(bundle: checks.BundleZip, manifest: dict, root: Path, stage: Path) -> list[_Incoming]:
    have = _checkpoints_by_fingerprint(root) if root.is_dir() else {}
    provided = {m["fingerprint"] for m in manifest["models"]}
    missing = [fp for fp in manifest["fingerprints"] if fp not in have and fp not in provided]
    if missing:
        raise InvalidInputError(f"the bundle lacks the weights of model {missing[0]}, and this workspace has none")
    incoming = []
    for m in manifest["models"]:
        if m["fingerprint"] in have:
            continue
        folder = stage / "models" / m["run_id"]
        folder.mkdir(parents=True, exist_ok=True)
        run = _run_record(bundle, m)
        staged = folder / m["file"]
        bundle.extract(f"models/{m['run_id']}/{m['file']}", staged, checks.max_bundle_bytes())
        state = _safetensors(staged, m)
        if _fingerprint(run, state) != m["fingerprint"]:
            raise InvalidInputError(f"the weights of {m['name']!r} do not match their fingerprint")
        record = _merged_record(root / m["run_id"], run, m, staged)
        if record is not None:
            incoming.append(_Incoming(m, record, staged))
    return incoming


def _run_record(bundle: checks.BundleZip, m: dict) -> dict:
    try:
        run = json.loads(bundle.read(f"models/{m['run_id']}/run.json", checks.MAX_RUN_JSON))
    except (ValueError, RecursionError) as exc:
        raise InvalidInputError(f"the run record of {m['name']!r} is not JSON ({exc})") from None
    ok = (isinstance(run, dict) and run.get("run_id") == m["run_id"] and run.get("status") == "complete"
          and isinstance(run.get("arch"), dict) and isinstance(run.get("checkpoints"), list)
          and isinstance(run.get("name"), str) and len(run["name"]) <= 300)
    entry = [c for c in run.get("checkpoints", []) if isinstance(c, dict) and c.get("file") == m["file"]] if ok else []
    if not (ok and len(entry) == 1 and entry[0].get("fingerprint") == m["fingerprint"]
            and entry[0].get("epoch") == m["epoch"]):
        raise InvalidInputError(f"the run record of {m['name']!r} does not describe the checkpoint the manifest names")
    try:
        from models.data import DataSpec
        from models.training import TrainConfig

        if run.get("data") is not None:
            DataSpec.from_dict(run["data"])
        if run.get("config") is not None:
            TrainConfig.from_dict(run["config"])
    except Exception as exc:      # noqa: BLE001 - whatever a crafted record makes the constructors raise
        raise InvalidInputError(f"the run record of {m['name']!r} has a bad data set or recipe "
                                f"({type(exc).__name__}: {str(exc)[:120]})") from None
    return {**run, "checkpoints": entry, "source": f"bundle: {str(run.get('source', 'trained'))[:100]}"}


def _safetensors(path: Path, m: dict) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))              # safetensors only: nothing is unpickled
    except Exception as exc:                       # noqa: BLE001 - its own error types for every corruption
        raise InvalidInputError(f"the weights of {m['name']!r} are not a safetensors file ({exc})") from None
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise InvalidInputError(f"the weights of {m['name']!r} hold NaN or infinite values ({', '.join(bad[:3])})")
    return state


def _merged_record(folder: Path, run: dict, m: dict, staged: Path) -> dict | None:
    """The run.json to write for this checkpoint: a new run, or the run already here with this
    checkpoint added; None if the very same file is there already; InvalidInputError if another
    run or other weights are there under these names."""
    if not folder.exists():
        return run
    if not (folder / "run.json").is_file():
        raise InvalidInputError(f"a run folder {m['run_id']!r} exists here without its record (a run in progress?)")
    current = read_json(folder / "run.json")
    if current.get("arch") != run.get("arch") or current.get("data") != run.get("data"):
        raise InvalidInputError(f"this workspace has another model under the run id {m['run_id']!r}; nothing was "
                                "imported")
    target = folder / m["file"]
    if target.exists() or any(c.get("file") == m["file"] or c.get("epoch") == m["epoch"]
                              for c in current.get("checkpoints", [])):
        if target.is_file() and target.read_bytes() == staged.read_bytes():
            return None
        raise InvalidInputError(f"{m['run_id']} already has other weights for epoch {m['epoch']} ({m['file']}): "
                                "nothing was imported, and the weights there are unchanged")
    return {**current, "checkpoints": sorted([*current["checkpoints"], *run["checkpoints"]], key=lambda c: c["epoch"])}


def _install(store: ResultStore, manifest: dict, raw: bytes, incoming: list[_Incoming], root: Path,
             write_result: bool) -> None:
    """Put the checked models and result in place; on any failure take back what was put."""
    undo: list = []
    try:
        for item in incoming:
            _place(item, root, undo)
        if write_result:
            _file_result(store, manifest, raw)
    except BaseException:
        for step in reversed(undo):
            step()
        raise


def _inside(root: Path, path: Path) -> Path:
    if not path.resolve().is_relative_to(root.resolve()):
        raise InvalidInputError(f"refusing to write outside the workspace: {path}")
    return path


def _place(item: _Incoming, root: Path, undo: list) -> None:
    root.mkdir(parents=True, exist_ok=True)
    folder = _inside(root, root / item.entry["run_id"])
    target = _inside(root, folder / item.entry["file"])
    if not folder.exists():                          # a new run: its folder appears whole, by one rename
        tmp = _inside(root, root / f".{folder.name}.incoming-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            shutil.copyfile(item.staged, tmp / item.entry["file"])
            write_json(tmp / "run.json", item.record)
            os.rename(tmp, folder)                   # fails if the folder appeared meanwhile: never merged silently
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        undo.append(lambda: shutil.rmtree(folder, ignore_errors=True))
        return
    before = (folder / "run.json").read_bytes()
    tmp = folder / f".{target.name}.{os.getpid()}.tmp"
    shutil.copyfile(item.staged, tmp)
    try:
        os.link(tmp, target)                         # FileExistsError rather than overwrite
    finally:
        tmp.unlink(missing_ok=True)
    undo.append(lambda: target.unlink(missing_ok=True))
    undo.append(lambda: (folder / "run.json").write_bytes(before))
    write_json(folder / "run.json", item.record)


def _file_result(store: ResultStore, manifest: dict, raw: bytes) -> None:
    job_id = manifest["job_id"]
    _inside(store.root, store.path(job_id))
    store.put_raw(job_id, raw, kind=manifest["kind"], label=manifest["label"], config=manifest["config"],
                  fingerprints=manifest["fingerprints"], data=manifest["data"], status="DONE",
                  message="imported from a bundle", created=manifest["created"], started=manifest["created"],
                  finished=manifest["created"] + (manifest["seconds"] or 0), seconds=manifest["seconds"],
                  device=manifest["device"], versions=manifest["versions"], error=None, owner="bundle",
                  code=manifest["code_version"])


def _fingerprint(run: dict, state: dict) -> str:
    """The fingerprint Lenscape gives these weights in this architecture (input normalization
    included), as the workspace computed it when it saved them. The architecture is first built on
    the meta device (no memory) and must have exactly the file's names and shapes, so a record that
    names a huge architecture costs nothing."""
    from models.architectures import ArchSpec, build_model
    from models.loading import model_from_state

    try:
        arch = ArchSpec.from_dict(run["arch"])
        with torch.device("meta"):
            shapes = {k: tuple(v.shape) for k, v in build_model(arch).state_dict().items()}
        if shapes != {k: tuple(v.shape) for k, v in state.items()}:
            raise InvalidInputError("the names or shapes differ")
        return model_fingerprint(model_from_state(arch, state))
    except Exception as exc:                        # noqa: BLE001 - whatever a crafted record makes them raise
        raise InvalidInputError(f"the bundle's weights do not fit their architecture ({str(exc)[:200]})") from None


def _decoded_check(raw: bytes):
    """The result object (decoding proves today's code can read it back)."""
    from backend.codec import decode

    try:
        return decode(raw)
    except Exception as exc:                        # noqa: BLE001 - any failure of a crafted file
        raise InvalidInputError(f"this Lenscape cannot read the bundle's result ({type(exc).__name__}: "
                                f"{str(exc)[:200]})") from None
