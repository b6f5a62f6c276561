"""The job kinds of the foundation: training one model, and summarizing a model."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from analysis.summary import ModelSummary, SummaryConfig, confusion_matrix, layer_table, predict_proba
from backend.jobs import Job, JobContext, ModelRef, job, job_kind, ref
from models.data import ImageData, load_data
from models.errors import InvalidInputError
from models.paths import runs_dir
from models.training import TrainConfig, evaluate, prepare_data, run_id_for, train_run
from models.zoo import LoadedModel, load_model


@job_kind("train", lane="long")
def train_job(ctx: JobContext, cfg: TrainConfig) -> dict:
    return train_run(cfg, runs_dir() / run_id_for(cfg), progress=ctx.progress, device=ctx.device)


def train_jobs(cfg: TrainConfig, seeds: list[int]) -> list[Job]:
    """One job per seed: seeds of one recipe are separate, individually cached runs."""
    from dataclasses import replace

    return [Job("train", replace(cfg, seed=s), data=cfg.data, label=f"train {replace(cfg, seed=s).describe()}")
            for s in seeds]


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
    test, train = load_data(lm.data, "test"), _training_set(lm)
    _check_fits(lm, test)
    ctx.progress(0.2, "evaluating on the training set")
    train_acc = evaluate(lm.model, train.head(scfg.max_eval), ctx.device)[1]
    ctx.progress(0.6, "evaluating on the test set")
    test = test.head(scfg.max_eval)
    _, test_acc, pred = evaluate(lm.model, test, ctx.device)
    gen = torch.Generator().manual_seed(scfg.seed)
    sample = torch.randperm(len(test), generator=gen)[:scfg.n_samples]
    probs = predict_proba(lm.model, test.x(sample))
    ctx.progress(1.0, "done")
    return ModelSummary(layers=layers, n_params=n_params, train_acc=train_acc, test_acc=test_acc,
                        confusion=confusion_matrix(pred, test.labels, test.num_classes),
                        sample_index=sample.numpy(), sample_probs=probs.numpy(),
                        sample_labels=test.labels[sample].numpy(), classes=list(test.classes),
                        fingerprint=lm.fingerprint)


def summary_job_for(lm: LoadedModel, cfg: SummaryConfig = SummaryConfig()) -> Job:
    r = ref(lm)
    return job("model_summary", SummaryJobConfig(model=r, summary=cfg), (r,), f"summary of {lm.name}", data=lm.data)


def _training_set(lm: LoadedModel) -> ImageData:
    """The exact training set (subset and noisy labels included) for trained runs."""
    if lm.record.get("config"):
        return prepare_data(TrainConfig.from_dict(lm.record["config"])).train
    return load_data(lm.data, "train")


def _check_fits(lm: LoadedModel, data: ImageData) -> None:
    if tuple(data.input_shape) != tuple(lm.arch.in_shape):
        raise InvalidInputError(f"{lm.name} takes images of shape {lm.arch.in_shape} but {data.spec.label} "
                                f"has {data.input_shape}")
    if data.num_classes != lm.arch.num_classes:
        raise InvalidInputError(f"{lm.name} has {lm.arch.num_classes} outputs but {data.spec.label} "
                                f"has {data.num_classes} classes")
