"""The workspace's models: every trained run and every imported model, kept on disk as a run
folder (safetensors checkpoints + run.json), so a restart lists the same models."""

from __future__ import annotations

import re
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from lenscape.models.architectures import ArchSpec
from lenscape.models.checkpoints import load_checkpoint, model_fingerprint, read_json, save_checkpoint, write_json
from lenscape.models.data import DataSpec, load_data
from lenscape.errors import InvalidInputError
from lenscape.models.loading import model_from_state
from lenscape.models.paths import runs_dir
from lenscape.models.training import PreparedData, TrainConfig, prepare_data


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
                except ValueError:  # half-written or damaged: skipped until it changes
                    rec = None
                with _RECORDS_LOCK:
                    _RECORDS[path] = (stamp, rec)
        except OSError:
            continue
        if rec and rec.get("status") == "complete":
            records.append(rec)
    return sorted(records, key=_created, reverse=True)


def _created(record: dict) -> float:
    """When a run was made, for sorting: a record that says something else (a hand-edited or damaged
    one) sorts last instead of breaking every page that lists runs."""
    value = record.get("created")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}")  # a folder name, never a path


def run_folder(run_id: str, root: Path | None = None) -> Path:
    """The run's folder; InvalidInputError for an id that is not a plain name (it may come from a link)."""
    if not isinstance(run_id, str) or not RUN_ID.fullmatch(run_id):
        raise InvalidInputError(f"not a model id: {str(run_id)[:60]!r}")
    return (root or runs_dir()) / run_id


def get_run(run_id: str, root: Path | None = None) -> dict:
    path = run_folder(run_id, root) / "run.json"
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


class WeightsChanged(InvalidInputError):
    """A checkpoint's weights on disk are not the ones its run recorded (swapped or damaged)."""


# (path, inode, mtime, ctime, size, fingerprint) of checkpoints whose bytes were checked: each file is
# hashed once per process and again whenever it changes
_VERIFIED: set[tuple] = set()


def _verified_state(rec: dict, entry: dict, root: Path | None) -> dict[str, torch.Tensor]:
    """A checkpoint's state_dict, after checking that its weights give the fingerprint recorded when
    they were saved (the fingerprint keys every cached result: other weights under it would be
    served the first weights' results). Costs one SHA-256 pass over the weights the first time a
    file is read (about 0.05 s for ResNet-18's 45 MB), none after."""
    path = (root or runs_dir()) / rec["run_id"] / entry["file"]
    try:
        st = path.stat()
        state, _ = load_checkpoint(path)
    except Exception as exc:  # noqa: BLE001 - missing, truncated or not safetensors
        raise WeightsChanged(
            f"the weights of {rec.get('name', rec['run_id'])!r} at epoch {entry['epoch']} cannot be "
            f"read ({type(exc).__name__}: {str(exc)[:120]})"
        ) from None
    # the change time too: a program can set a file's modification time back, not its change time
    stamp = (str(path), st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size, entry["fingerprint"])
    if stamp not in _VERIFIED:
        model = model_from_state(ArchSpec.from_dict(rec["arch"]), state)
        if model_fingerprint(model) != entry["fingerprint"]:
            raise WeightsChanged(
                f"the weights of {rec.get('name', rec['run_id'])!r} at epoch {entry['epoch']} on disk "
                f"({path.name}) are not the ones recorded when they were saved: the file was replaced "
                "or damaged. Its results are not shown; delete the model or restore the file."
            )
        _VERIFIED.add(stamp)
    return state


def load_state(run_id: str, epoch: int | None = None, root: Path | None = None) -> dict[str, torch.Tensor]:
    """The run's weights at `epoch` (default: the last checkpoint) as a state_dict on the CPU
    (safetensors: nothing is unpickled), checked against their recorded fingerprint."""
    rec = get_run(run_id, root)
    return _verified_state(rec, _checkpoint(rec, epoch), root)


def iter_states(run_id: str, root: Path | None = None) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
    """(epoch, state_dict) of every checkpoint of the run, in epoch order, one at a time."""
    rec = get_run(run_id, root)
    for c in sorted(rec["checkpoints"], key=lambda c: c["epoch"]):
        yield c["epoch"], _verified_state(rec, c, root)


def load_model(
    run_id: str, epoch: int | None = None, root: Path | None = None, device: torch.device | str = "cpu"
) -> LoadedModel:
    """The run's model at `epoch` (default: the last checkpoint); WeightsChanged if its weights
    on disk are not the ones recorded."""
    rec = get_run(run_id, root)
    entry = _checkpoint(rec, epoch)
    state = _verified_state(rec, entry, root)
    arch = ArchSpec.from_dict(rec["arch"])
    model = model_from_state(arch, state).to(device)
    data = DataSpec.from_dict(rec["data"]) if rec.get("data") else None
    return LoadedModel(
        run_id, rec["name"], model, arch, data, tuple(rec.get("classes", ())), entry["fingerprint"], entry["epoch"], rec
    )


def training_data(lm: LoadedModel) -> PreparedData:
    """The data the model was trained on, exactly: for a run trained here its recipe's subset and
    flipped labels, with the noise mask (True = relabelled) and the original labels; for an
    imported model its data set's splits, with no mask."""
    if lm.record.get("config"):
        return prepare_data(TrainConfig.from_dict(lm.record["config"]))
    if lm.data is None:
        raise InvalidInputError(f"{lm.name} has no data set attached; import it with one")
    train = load_data(lm.data, "train")
    mask, original = None, train.labels
    noise = lm.record.get("noise") or {}
    if noise.get("indices"):  # a model trained elsewhere on noisy labels, with the clean ones given
        idx = torch.tensor(noise["indices"], dtype=torch.long)
        clean = torch.tensor(noise.get("original_labels", []), dtype=torch.long)
        n_classes = len(lm.classes) or train.num_classes
        if (
            len(clean) != len(idx)
            or int(idx.min()) < 0
            or int(idx.max()) >= len(train)
            or (len(clean) and (int(clean.min()) < 0 or int(clean.max()) >= n_classes))
        ):  # a record written by hand or from a bundle: indices of the split, labels of the classes
            raise InvalidInputError(f"{lm.name}'s label-noise record does not fit its training split")
        mask = torch.zeros(len(train), dtype=torch.bool)
        mask[idx] = True
        original = train.labels.clone()
        original[idx] = clean
    return PreparedData(train, load_data(lm.data, "test"), mask, original)


class AlreadyImported(InvalidInputError):
    """These weights, with this normalization, are in the workspace already (under `record["name"]`)."""

    def __init__(self, record: dict) -> None:
        super().__init__(
            f"these weights (with this input normalization) are already in the workspace as "
            f"{record['name']!r}; nothing was imported again"
        )
        self.record = record


def import_model(
    model: nn.Module,
    arch: ArchSpec,
    name: str,
    data: DataSpec | None,
    classes: tuple[str, ...],
    source: str,
    root: Path | None = None,
) -> dict:
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
    record = {
        "run_id": run_id,
        "name": name,
        "source": source,
        "created": time.time(),
        "arch": arch.to_dict(),
        "data": data.to_dict() if data else None,
        "classes": list(classes),
        "normalization": {"mean": list(arch.mean), "std": list(arch.std)},
        "seed": None,
        "config": None,
        "metrics": [],
        "checkpoints": [{"epoch": 0, "file": "epoch_000.safetensors", "fingerprint": fp}],
        "noise": None,
        "status": "complete",
    }
    write_json(folder / "run.json", record)
    return record


def delete_run(run_id: str, root: Path | None = None) -> None:
    folder = run_folder(run_id, root)
    if not (folder / "run.json").exists():
        raise InvalidInputError(f"no model {run_id!r} to delete")
    shutil.rmtree(folder)
