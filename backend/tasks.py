"""The job kinds of the foundation: training one model, and summarizing a model."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from lenscape.analysis.evaluation import evaluate
from lenscape.analysis.summary import ModelSummary, SummaryConfig, confusion_matrix, layer_table
from lenscape.backend.jobs import Job, JobContext, ModelRef, job, job_kind, ref, stage
from lenscape.backend.pieces import Resources, piece_progress
from lenscape.backend.runner import process_alive
from lenscape.models.checkpoints import read_json
from lenscape.models.data import DataSpec, ImageData, prepare
from lenscape.errors import InvalidInputError
from lenscape.models.paths import runs_dir
from lenscape.models.seeding import generator
from lenscape.models.training import PreparedData, TrainConfig, finished_run, prepare_data, run_id_for, train_run
from lenscape.models.zoo import LoadedModel, load_model, training_data


@job_kind("train", lane="long")
def train_job(ctx: JobContext, cfg: TrainConfig) -> dict:
    """One run, trained as a piece: here in the job's thread, or on a Ray worker (a GPU where the
    cluster has one) that gets the data by reference and sends the run's files back; the files are
    written into the workspace here, all at once."""
    folder = runs_dir() / run_id_for(cfg)
    record = finished_run(cfg, folder)
    if record is not None:
        return record
    ctx.progress(0.0, f"loading {cfg.data.label}")
    data = ctx.share(prepare_data(cfg))
    # pinned to the threads a local run uses here, so that a Ray worker's weights match bit for bit
    threads = torch.get_num_threads()
    (files,) = ctx.map(
        train_piece, [(cfg, folder.name, data)], "training", resources=Resources(cpus=threads, gpus=1, threads=threads)
    )
    install_run(files, folder)
    return read_json(folder / "run.json")


def train_piece(cfg: TrainConfig, run_id: str, data: PreparedData, *, device) -> dict[str, bytes]:
    """A training run (a piece): trained into a scratch folder; its files (checkpoints, run.json) come back."""
    _sweep_scratch()
    with tempfile.TemporaryDirectory(prefix=f"lenscape-train-{os.getpid()}-") as tmp:
        out = Path(tmp) / run_id
        train_run(cfg, out, progress=piece_progress, device=device, data=data)
        return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def _sweep_scratch() -> None:
    """Scratch folders of training processes that died (kill -9 leaves them behind)."""
    for folder in Path(tempfile.gettempdir()).glob("lenscape-train-*-*"):
        pid = folder.name.split("-")[2]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def install_run(files: dict[str, bytes], folder: Path) -> None:
    """Write a run's files as its folder in one step: written beside it, then renamed into place, so
    the workspace never lists half a run."""
    incoming = folder.parent / f".{folder.name}.incoming-{os.getpid()}"
    shutil.rmtree(incoming, ignore_errors=True)
    incoming.mkdir(parents=True)
    try:
        for name, raw in files.items():
            (incoming / Path(name).name).write_bytes(raw)
        shutil.rmtree(folder, ignore_errors=True)  # an unfinished run of the same recipe
        os.replace(incoming, folder)
    except BaseException:  # a full disk: nothing half-written stays
        shutil.rmtree(incoming, ignore_errors=True)
        raise


def train_jobs(cfg: TrainConfig, seeds: list[int]) -> list[Job]:
    """One job per seed: seeds of one recipe are separate, individually cached runs."""
    from dataclasses import replace

    return [
        Job("train", replace(cfg, seed=s), data=cfg.data, label=f"train {replace(cfg, seed=s).describe()}")
        for s in seeds
    ]


@dataclass(frozen=True, kw_only=True)
class SummaryJobConfig:
    model: ModelRef
    summary: SummaryConfig = SummaryConfig()

    def __post_init__(self) -> None:
        if not isinstance(self.model, ModelRef) or not isinstance(self.summary, SummaryConfig):
            raise InvalidInputError(f"a summary needs a ModelRef and a SummaryConfig; got {self}")


@job_kind("model_summary")
def summary_job(ctx: JobContext, cfg: SummaryJobConfig) -> ModelSummary:
    scfg = cfg.summary
    lm = load_model(cfg.model.run_id, cfg.model.epoch, device=ctx.device)
    ctx.progress(0.05, "layer table")
    layers = layer_table(lm.model, lm.arch.in_shape)
    n_params = sum(p.numel() for p in lm.model.parameters())
    if lm.data is None:
        raise InvalidInputError(f"{lm.name} has no data set attached; import it with one to evaluate it")
    ctx.progress(0.1, f"loading {lm.data.label}")
    prepared = training_data(lm)
    test, train = prepared.test, prepared.train
    _check_fits(lm, test)
    train, test = train.head(scfg.max_eval), test.head(scfg.max_eval)
    on_train = evaluate(lm.model, train.images, train.labels, progress=stage(ctx, 0.2, 0.6, "training set"))
    on_test = evaluate(
        lm.model, test.images, test.labels, probabilities=True, progress=stage(ctx, 0.6, 0.95, "test set")
    )
    sample = torch.randperm(len(test), generator=generator(scfg.seed))[: scfg.n_samples]
    ctx.progress(1.0, "done")
    return ModelSummary(
        layers=layers,
        n_params=n_params,
        train_acc=on_train.accuracy,
        test_acc=on_test.accuracy,
        confusion=confusion_matrix(on_test.predictions, test.labels, test.num_classes),
        sample_index=sample.numpy(),
        sample_probs=on_test.probabilities[sample].numpy(),
        sample_labels=test.labels[sample].numpy(),
        classes=list(test.classes),
        fingerprint=lm.fingerprint,
    )


@dataclass(frozen=True, kw_only=True)
class PrepareDataConfig:
    data: DataSpec

    def __post_init__(self) -> None:
        if not isinstance(self.data, DataSpec):
            raise InvalidInputError(f"prepare_data needs a DataSpec; got {self.data!r}")


@job_kind("prepare_data")
def prepare_data_job(ctx: JobContext, cfg: PrepareDataConfig) -> dict:
    """Decode a data set's image folders once into the cache, off the page's thread."""
    return prepare(cfg.data, ctx.progress)


def prepare_data_job_for(spec: DataSpec) -> Job:
    return job("prepare_data", PrepareDataConfig(data=spec), label=f"decoding the images of {spec.label} (once)")


def summary_job_for(lm: LoadedModel, cfg: SummaryConfig = SummaryConfig()) -> Job:  # noqa: B008 - frozen
    r = ref(lm)
    return job("model_summary", SummaryJobConfig(model=r, summary=cfg), (r,), f"summary of {lm.name}", data=lm.data)


def _check_fits(lm: LoadedModel, data: ImageData) -> None:
    if tuple(data.input_shape) != tuple(lm.arch.in_shape):
        raise InvalidInputError(
            f"{lm.name} takes images of shape {lm.arch.in_shape} but {data.spec.label} has {data.input_shape}"
        )
    if data.num_classes != lm.arch.num_classes:
        raise InvalidInputError(
            f"{lm.name} has {lm.arch.num_classes} outputs but {data.spec.label} has {data.num_classes} classes"
        )
