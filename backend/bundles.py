"""Reproducibility bundles: one stored result with everything needed to trust it and reopen it in
another Lenscape. A bundle is a zip of

- `manifest.json`: the job's kind, label, config, model fingerprints, data selection, the device and
  library versions it ran with, when and how long, the result's checksum, the code version of its
  kind, and for each model its run id, name, recipe (seeds included) and checkpoint;
- `result.npz`: the stored result, byte for byte (the store's own encoding, no pickle);
- `models/<run_id>/run.json` and the checkpoint file (safetensors) of each model the job used.

Importing checks the result's checksum and the checkpoints' fingerprints, copies models the
workspace lacks, and files the result under the same job id: the pages that submit the same job
find it without recomputing (when both sides run the same code version of that kind)."""

from __future__ import annotations

import hashlib
import io
import json
import time
import zipfile
from pathlib import Path

from safetensors.torch import load as safetensors_load

from backend.jobs import REGISTRY, code_version
from backend.store import ResultStore
from models.checkpoints import model_fingerprint, write_json
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
                    "code_version": code_version(row["kind"]) if row["kind"] in REGISTRY else None,
                    "config": json.loads(row["config"]), "fingerprints": json.loads(row["fingerprints"] or "[]"),
                    "data": json.loads(row["data"]) if row["data"] else None, "device": row["device"],
                    "versions": json.loads(row["versions"]) if row["versions"] else {}, "created": row["created"],
                    "seconds": row["seconds"], "checksum": row["checksum"], "models": models,
                    "exported": time.time()}
        z.writestr("manifest.json", json.dumps(manifest, indent=1))
        z.write(store.path(job_id), "result.npz")
    return buf.getvalue()


def read_manifest(data: bytes) -> dict:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            manifest = json.loads(z.read("manifest.json"))
    except (zipfile.BadZipFile, KeyError, ValueError) as exc:
        raise InvalidInputError(f"not a Lenscape bundle ({type(exc).__name__}: {exc})") from None
    if manifest.get("format") != FORMAT:
        raise InvalidInputError(f"not a Lenscape bundle of format {FORMAT}: {manifest.get('format')!r}")
    return manifest


def import_bundle(store: ResultStore, data: bytes, root: Path | None = None) -> dict:
    """File a bundle's result and models in this workspace; returns its manifest. Nothing is
    written unless every check passes (result checksum, each checkpoint's fingerprint)."""
    root = root or runs_dir()
    manifest = read_manifest(data)
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        raw = z.read("result.npz")
        if hashlib.sha256(raw).hexdigest() != manifest["checksum"]:
            raise InvalidInputError("the bundle's result does not match its checksum: it was changed or damaged")
        have = _checkpoints_by_fingerprint(root)
        incoming = []
        for m in manifest["models"]:
            if m["fingerprint"] in have:
                continue
            ck_bytes = z.read(f"models/{m['run_id']}/{m['file']}")
            try:
                state = safetensors_load(ck_bytes)      # safetensors only: nothing is unpickled
            except Exception as exc:
                raise InvalidInputError(f"the weights of {m['name']} are not a safetensors file ({exc})") from None
            run = json.loads(z.read(f"models/{m['run_id']}/run.json"))
            if _fingerprint(run, state) != m["fingerprint"]:
                raise InvalidInputError(f"the weights of {m['name']} do not match their fingerprint")
            incoming.append((m, ck_bytes, run))
    for m, ck_bytes, rec in incoming:
        folder = root / m["run_id"]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / m["file"]).write_bytes(ck_bytes)
        if (folder / "run.json").exists():          # the same run with other checkpoints: add this one
            current = json.loads((folder / "run.json").read_text())
            current["checkpoints"] = sorted([*current["checkpoints"], *[c for c in rec["checkpoints"]
                                                                         if c["fingerprint"] == m["fingerprint"]]],
                                            key=lambda c: c["epoch"])
            rec = current
        else:
            rec = {**rec, "checkpoints": [c for c in rec["checkpoints"] if c["fingerprint"] == m["fingerprint"]],
                   "source": f"bundle: {rec.get('source', 'trained')}"}
        write_json(folder / "run.json", rec)
    job_id = manifest["job_id"]
    store.upsert(job_id, kind=manifest["kind"], label=manifest["label"], config=manifest["config"],
                 fingerprints=manifest["fingerprints"], data=manifest["data"], status="RUNNING",
                 message="imported from a bundle", created=manifest["created"], started=manifest["created"],
                 finished=manifest["created"] + (manifest["seconds"] or 0), seconds=manifest["seconds"],
                 device=manifest["device"], versions=manifest["versions"], error=None, owner="bundle")
    store.put_result(job_id, _decoded_check(raw))
    store.upsert(job_id, status="DONE")
    return manifest


def _fingerprint(run: dict, state: dict) -> str:
    """The fingerprint Lenscape gives these weights in this architecture (input normalization
    included), as the workspace computed it when it saved them."""
    from models.architectures import ArchSpec
    from models.loading import model_from_state

    try:
        return model_fingerprint(model_from_state(ArchSpec.from_dict(run["arch"]), state))
    except Exception as exc:
        raise InvalidInputError(f"the bundle's weights do not fit their architecture ({exc})") from None


def _decoded_check(raw: bytes):
    """The result object (decoding proves today's code can read it back) to store again."""
    from backend.codec import decode

    try:
        return decode(raw)
    except Exception as exc:
        raise InvalidInputError(f"this Lenscape cannot read the bundle's result ({type(exc).__name__}: {exc})") from None
