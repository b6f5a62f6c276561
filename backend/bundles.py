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

from lenscape.backend import bundle_checks as checks
from lenscape.backend.jobs import REGISTRY, code_version
from lenscape.backend.store import ResultStore
from lenscape.models.checkpoints import model_fingerprint, read_json, write_json
from lenscape.errors import InvalidInputError
from lenscape.models.loading import check_finite_state
from lenscape.models.paths import runs_dir
from lenscape.models.zoo import list_runs

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
            if rec["run_id"] not in {m["run_id"] for m in models}:  # one record per run
                z.writestr(f"models/{rec['run_id']}/run.json", json.dumps(rec, indent=1))
            models.append(
                {
                    "run_id": rec["run_id"],
                    "name": rec["name"],
                    "epoch": ck["epoch"],
                    "fingerprint": fp,
                    "file": ck["file"],
                    "recipe": rec.get("config"),
                    "seed": rec.get("seed"),
                }
            )
        manifest = {
            "format": FORMAT,
            "job_id": job_id,
            "kind": row["kind"],
            "label": row["label"],
            "code_version": _exported_code(row),
            "config": json.loads(row["config"]),
            "fingerprints": json.loads(row["fingerprints"] or "[]"),
            "data": json.loads(row["data"]) if row["data"] else None,
            "device": row["device"],
            "versions": json.loads(row["versions"]) if row["versions"] else {},
            "created": row["created"],
            "seconds": row["seconds"],
            "checksum": row["checksum"],
            "models": models,
            "exported": time.time(),
        }
        z.writestr("manifest.json", json.dumps(manifest, indent=1))
        z.write(store.path(job_id), "result.npz")
    return buf.getvalue()


def _exported_code(row: dict) -> str:
    """The code version the job was computed with: recorded with it, or (a store from before that
    was recorded) today's, if it gives back the job's id; otherwise the bundle could not be checked."""
    code = row.get("code") or (code_version(row["kind"]) if row["kind"] in REGISTRY else None)
    probe = {
        "kind": row["kind"],
        "code_version": code,
        "fingerprints": json.loads(row["fingerprints"] or "[]"),
        "data": json.loads(row["data"]) if row["data"] else None,
        "config": json.loads(row["config"]),
    }
    if code is None or checks.job_id_of(probe) != row["id"]:
        raise InvalidInputError(
            f"job {row['id']} was computed by another version of Lenscape's code than this one "
            "and its id cannot be checked by an importer: compute it again to export it"
        )
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
        raise InvalidInputError(
            "the bundle's job id does not follow from its kind, code version, models, data and "
            "config: it was changed, and is refused"
        )
    expected = {"manifest.json", "result.npz"} | {
        f"models/{m['run_id']}/{n}" for m in manifest["models"] for n in ("run.json", m["file"])
    }
    if bundle.names() - expected:
        raise InvalidInputError(
            f"the bundle holds entries a bundle does not have: {sorted(bundle.names() - expected)[:3]}"
        )
    return manifest


@dataclass
class _Incoming:
    """A run the workspace lacks (or a run imported from a bundle before, lacking these checkpoints),
    checked and written into the staging folder."""

    run_id: str
    record: dict  # the run.json to write
    staged: dict[str, Path]  # checkpoint file name -> its staged copy
    new: bool  # no folder of this run here yet


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
            return manifest  # everything in it is here already
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
            raise InvalidInputError(
                f"this workspace holds another result under job id {manifest['job_id']}; "
                "nothing was imported (delete that one on the Runs page first to replace it)"
            )
        return True
    return False  # failed, cancelled or lost: the bundle's fills the place


def _checked_models(bundle: checks.BundleZip, manifest: dict, root: Path, stage: Path) -> list[_Incoming]:
    have = _checkpoints_by_fingerprint(root) if root.is_dir() else {}
    provided = {m["fingerprint"] for m in manifest["models"]}
    missing = [fp for fp in manifest["fingerprints"] if fp not in have and fp not in provided]
    if missing:
        raise InvalidInputError(f"the bundle lacks the weights of model {missing[0]}, and this workspace has none")
    runs: dict[str, list[dict]] = {}
    for m in manifest["models"]:
        runs.setdefault(m["run_id"], []).append(m)
    incoming = []
    for run_id, entries in runs.items():
        todo = [m for m in entries if m["fingerprint"] not in have]
        if not todo:
            continue
        run = _run_record(bundle, run_id, entries)
        staged = {}
        for m in todo:
            path = stage / "models" / run_id / m["file"]
            path.parent.mkdir(parents=True, exist_ok=True)
            bundle.extract(f"models/{run_id}/{m['file']}", path, checks.max_bundle_bytes())
            if _fingerprint(run, _safetensors(path, m)) != m["fingerprint"]:
                raise InvalidInputError(f"the weights of {m['name']!r} do not match their fingerprint")
            staged[m["file"]] = path
        checks.check_run_id(run, todo)
        item = _merged(root / run_id, run, todo, staged)
        if item is not None:
            incoming.append(item)
    return incoming


def _run_record(bundle: checks.BundleZip, run_id: str, entries: list[dict]) -> dict:
    """The bundle's run.json for `run_id`, checked, with only the checkpoints the manifest names."""
    name = entries[0]["name"]
    try:
        run = json.loads(bundle.read(f"models/{run_id}/run.json", checks.MAX_RUN_JSON))
    except (ValueError, RecursionError) as exc:
        raise InvalidInputError(f"the run record of {name!r} is not JSON ({exc})") from None
    checks.check_run_record(run, run_id, entries)
    files = {m["file"] for m in entries}
    return {
        **run,
        "checkpoints": sorted((c for c in run["checkpoints"] if c["file"] in files), key=lambda c: c["epoch"]),
        "source": f"bundle: {str(run.get('source', 'trained'))[:100]}",
    }


def _safetensors(path: Path, m: dict) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))  # safetensors only: nothing is unpickled
    except Exception as exc:  # noqa: BLE001 - its own error types for every corruption
        raise InvalidInputError(f"the weights of {m['name']!r} are not a safetensors file ({exc})") from None
    check_finite_state(state, f"the weights of {m['name']!r}")
    return state


def _merged(folder: Path, run: dict, todo: list[dict], staged: dict[str, Path]) -> _Incoming | None:
    """What to write for this run: a new run; or, for a run that came from a bundle before and is
    the same run in every other field, its record with these checkpoints added; None if the very
    same files are there. A run made here (trained or imported) is never changed by a bundle."""
    if not folder.exists():
        return _Incoming(folder.name, run, staged, new=True)
    if not (folder / "run.json").is_file():
        raise InvalidInputError(f"a run folder {folder.name!r} exists here without its record (a run in progress?)")
    current = read_json(folder / "run.json")
    same = {k: v for k, v in current.items() if k != "checkpoints"} == {
        k: v for k, v in run.items() if k != "checkpoints"
    }
    there = {c["file"]: c for c in current.get("checkpoints", [])}
    if all(
        f in there and (folder / f).is_file() and (folder / f).read_bytes() == p.read_bytes() for f, p in staged.items()
    ):
        return None
    if not (same and str(current.get("source", "")).startswith("bundle:")):
        raise InvalidInputError(
            f"this workspace has another model under the run id {folder.name!r}: a bundle adds "
            "checkpoints only to a run that came from a bundle, and only to the same run. "
            "Nothing was imported."
        )
    clash = [m["file"] for m in todo if m["file"] in there or any(c["epoch"] == m["epoch"] for c in there.values())]
    if clash:
        raise InvalidInputError(
            f"{folder.name} already has other weights for {clash[0]}: nothing was imported, and "
            "the weights there are unchanged"
        )
    merged = sorted([*current["checkpoints"], *run["checkpoints"]], key=lambda c: c["epoch"])
    return _Incoming(folder.name, {**current, "checkpoints": merged}, staged, new=False)


def _install(
    store: ResultStore, manifest: dict, raw: bytes, incoming: list[_Incoming], root: Path, write_result: bool
) -> None:
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
    folder = _inside(root, root / item.run_id)
    targets = {f: _inside(root, folder / f) for f in item.staged}
    if item.new:  # a new run: its folder appears whole, by one rename
        tmp = _inside(root, root / f".{folder.name}.incoming-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            for f, path in item.staged.items():
                shutil.copyfile(path, tmp / f)
            write_json(tmp / "run.json", item.record)
            os.rename(tmp, folder)  # fails if the folder appeared meanwhile: never merged silently
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        undo.append(lambda: shutil.rmtree(folder, ignore_errors=True))
        return
    before = (folder / "run.json").read_bytes()
    undo.append(lambda: (folder / "run.json").write_bytes(before))
    for f, path in item.staged.items():
        tmp = folder / f".{f}.{os.getpid()}.tmp"
        shutil.copyfile(path, tmp)
        try:
            os.link(tmp, targets[f])  # FileExistsError rather than overwrite
        finally:
            tmp.unlink(missing_ok=True)
        undo.append(lambda t=targets[f]: t.unlink(missing_ok=True))
    write_json(folder / "run.json", item.record)


def _file_result(store: ResultStore, manifest: dict, raw: bytes) -> None:
    job_id = manifest["job_id"]
    _inside(store.root, store.path(job_id))
    store.put_raw(
        job_id,
        raw,
        kind=manifest["kind"],
        label=manifest["label"],
        config=manifest["config"],
        fingerprints=manifest["fingerprints"],
        data=manifest["data"],
        status="DONE",
        message="imported from a bundle",
        created=manifest["created"],
        started=manifest["created"],
        finished=manifest["created"] + (manifest["seconds"] or 0),
        seconds=manifest["seconds"],
        device=manifest["device"],
        versions=manifest["versions"],
        error=None,
        owner="bundle",
        code=manifest["code_version"],
    )


def _fingerprint(run: dict, state: dict) -> str:
    """The fingerprint Lenscape gives these weights in this architecture (input normalization
    included), as the workspace computed it when it saved them. The architecture is first built on
    the meta device (no memory) and must have exactly the file's names and shapes, so a record that
    names a huge architecture costs nothing."""
    from lenscape.models.architectures import ArchSpec, build_model
    from lenscape.models.custom import check_trusted
    from lenscape.models.loading import model_from_state

    if isinstance(run["arch"], dict) and (run["arch"].get("name") == "custom" or run["arch"].get("builder")):
        # a bundle never names code, or arguments for it, that this server was not given
        check_trusted(run["arch"].get("builder"), run["arch"].get("builder_kwargs"))
    try:
        arch = ArchSpec.from_dict(run["arch"])
        with torch.device("meta"):
            shapes = {k: tuple(v.shape) for k, v in build_model(arch).state_dict().items()}
        if shapes != {k: tuple(v.shape) for k, v in state.items()}:
            raise InvalidInputError("the names or shapes differ")
        return model_fingerprint(model_from_state(arch, state))
    except Exception as exc:  # noqa: BLE001 - whatever a crafted record makes them raise
        raise InvalidInputError(f"the bundle's weights do not fit their architecture ({str(exc)[:200]})") from None


def _decoded_check(raw: bytes):
    """The result object (decoding proves today's code can read it back)."""
    from lenscape.backend.codec import decode

    try:
        return decode(raw)
    except Exception as exc:  # noqa: BLE001 - any failure of a crafted file
        raise InvalidInputError(
            f"this Lenscape cannot read the bundle's result ({type(exc).__name__}: {str(exc)[:200]})"
        ) from None
