"""The workspace's models: every trained run and every imported model, kept on disk as a run
folder (safetensors checkpoints + run.json), so a restart lists the same models."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from models.architectures import ArchSpec
from models.checkpoints import load_checkpoint, model_fingerprint, read_json, save_checkpoint, write_json
from models.data import DataSpec, load_data
from models.errors import InvalidInputError
from models.loading import model_from_state
from models.paths import runs_dir
from models.training import PreparedData, TrainConfig, prepare_data


@dataclass(frozen=True)
class LoadedModel:
    """A model ready for analysis: eval mode, with what the views need to know about it."""

    run_id: str
    name: str
    model: nn.Module
    arch: ArchSpec
    data: DataSpec | None
    classes: tuple[str, ...]
    fingerprint: str
    epoch: int
    record: dict

    @property
    def noise_mask_indices(self) -> list[int]:
        return (self.record.get("noise") or {}).get("indices", [])


_RECORDS: dict[Path, tuple[tuple[int, int], dict | None]] = {}
_RECORDS_LOCK = threading.Lock()


def list_runs(root: Path | None = None) -> list[dict]:
    """Run records, newest first. Folders of unfinished or broken runs are skipped.

    A run.json is read again only when its size or modification time changed, so pages may call
    this on every rerun. The records are shared: treat them as read-only."""
    records = []
    for path in (root or runs_dir()).glob("*/run.json"):
        try:
            st = path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
            with _RECORDS_LOCK:
                hit = _RECORDS.get(path)
            if hit and hit[0] == stamp:
                rec = hit[1]
            else:
                try:
                    rec = read_json(path)
                except ValueError:          # half-written or damaged: skipped until it changes
                    rec = None
                with _RECORDS_LOCK:
                    _RECORDS[path] = (stamp, rec)
        except OSError:
            continue
        if rec and rec.get("status") == "complete":
            records.append(rec)
    return sorted(records, key=lambda r: r.get("created", 0), reverse=True)


def get_run(run_id: str, root: Path | None = None) -> dict:
    path = (root or runs_dir()) / run_id / "run.json"
    if not path.exists():
        raise InvalidInputError(f"no model {run_id!r} in the workspace ({path.parent.parent})")
    return read_json(path)


def _checkpoint(rec: dict, epoch: int | None) -> dict:
    ckpts = {c["epoch"]: c for c in rec["checkpoints"]}
    if not ckpts:
        raise InvalidInputError(f"{rec['run_id']} has no checkpoints")
    epoch = max(ckpts) if epoch is None else epoch
    if epoch not in ckpts:
        raise InvalidInputError(f"{rec['run_id']} has checkpoints for epochs {sorted(ckpts)}; got {epoch}")
    return ckpts[epoch]


def load_state(run_id: str, epoch: int | None = None, root: Path | None = None) -> dict[str, torch.Tensor]:
    """The run's weights at `epoch` (default: the last checkpoint) as a state_dict on the CPU,
    without building a model (safetensors: nothing is unpickled)."""
    rec = get_run(run_id, root)
    state, _ = load_checkpoint((root or runs_dir()) / run_id / _checkpoint(rec, epoch)["file"])
    return state


def iter_states(run_id: str, root: Path | None = None) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
    """(epoch, state_dict) of every checkpoint of the run, in epoch order, one at a time."""
    rec = get_run(run_id, root)
    for c in sorted(rec["checkpoints"], key=lambda c: c["epoch"]):
        yield c["epoch"], load_checkpoint((root or runs_dir()) / run_id / c["file"])[0]


def load_model(run_id: str, epoch: int | None = None, root: Path | None = None,
               device: torch.device | str = "cpu") -> LoadedModel:
    """The run's model at `epoch` (default: the last checkpoint)."""
    rec = get_run(run_id, root)
    entry = _checkpoint(rec, epoch)
    state, _ = load_checkpoint((root or runs_dir()) / run_id / entry["file"])
    arch = ArchSpec.from_dict(rec["arch"])
    model = model_from_state(arch, state).to(device)
    data = DataSpec.from_dict(rec["data"]) if rec.get("data") else None
    return LoadedModel(run_id, rec["name"], model, arch, data, tuple(rec.get("classes", ())),
                       entry["fingerprint"], entry["epoch"], rec)


def training_data(lm: LoadedModel) -> PreparedData:
    """The data the model was trained on, exactly: for a run trained here its recipe's subset and
    flipped labels, with the noise mask (True = relabelled) and the original labels; for an
    imported model its data set's splits, with no mask."""
    if lm.record.get("config"):
        return prepare_data(TrainConfig.from_dict(lm.record["config"]))
    if lm.data is None:
        raise InvalidInputError(f"{lm.name} has no data set attached; import it with one")
    train = load_data(lm.data, "train")
    return PreparedData(train, load_data(lm.data, "test"), None, train.labels)


class AlreadyImported(InvalidInputError):
    """These weights, with this normalization, are in the workspace already (under `record["name"]`)."""

    def __init__(self, record: dict) -> None:
        super().__init__(f"these weights (with this input normalization) are already in the workspace as "
                         f"{record['name']!r}; nothing was imported again")
        self.record = record


def import_model(model: nn.Module, arch: ArchSpec, name: str, data: DataSpec | None,
                 classes: tuple[str, ...], source: str, root: Path | None = None) -> dict:
    """Keep an uploaded or downloaded model in the workspace as a one-checkpoint run. The same model
    imported again raises AlreadyImported instead of renaming the one there (its jobs keep its name)."""
    fp = model_fingerprint(model)
    run_id = f"import-{fp}"
    folder = (root or runs_dir()) / run_id
    if (folder / "run.json").exists():
        existing = read_json(folder / "run.json")
        if existing.get("status") == "complete":
            raise AlreadyImported(existing)
    folder.mkdir(parents=True, exist_ok=True)
    save_checkpoint(folder / "epoch_000.safetensors", model, {"arch": arch.to_dict(), "epoch": 0, "run_id": run_id})
    record = {"run_id": run_id, "name": name, "source": source, "created": time.time(), "arch": arch.to_dict(),
              "data": data.to_dict() if data else None, "classes": list(classes),
              "normalization": {"mean": list(arch.mean), "std": list(arch.std)}, "seed": None, "config": None,
              "metrics": [], "checkpoints": [{"epoch": 0, "file": "epoch_000.safetensors", "fingerprint": fp}],
              "noise": None, "status": "complete"}
    write_json(folder / "run.json", record)
    return record


def delete_run(run_id: str, root: Path | None = None) -> None:
    folder = (root or runs_dir()) / run_id
    if not (folder / "run.json").exists():
        raise InvalidInputError(f"no model {run_id!r} to delete")
    shutil.rmtree(folder)
