"""Memorization jobs (Maini et al. 2023; analysis/memorization.py does the work): the accuracies over
training on clean and relabelled examples with the memorized ones listed, gradient accounting,
layer rewinding, layer retraining, neuron flipping, and example-tied dropout kept vs dropped.

All of them need a run trained here with label noise: its noise mask says which training examples
were relabelled (models.zoo.training_data rebuilds the exact training set)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from lenscape.analysis.evaluation import evaluate
from lenscape.analysis.memorization import (
    GROUPINGS,
    memorization_curves,
    FlipConfig,
    FlipResult,
    GradientAccount,
    ParamGradients,
    RetrainConfig,
    flip_neurons,
    gradient_account,
    group_account,
    layer_groups,
    masked_accuracy,
    neuron_layers,
    neuron_units,
    retrain_group,
    rewound,
    tied_dropout_accuracies,
)
from lenscape.backend.jobs import JobContext, ModelRef, job_kind, stage
from lenscape.backend.pieces import ModelPayload, Resources, concat, payload_model, piece_progress
from lenscape.errors import InvalidInputError
from lenscape.models.zoo import LoadedModel, get_run, load_model, load_state, training_data


class NothingMemorized(InvalidInputError):
    """The model was trained without label noise: no example was relabelled, none memorized."""


def _noisy_model(ref: ModelRef, device) -> tuple[LoadedModel, object]:
    lm = load_model(ref.run_id, ref.epoch, device=device)
    data = training_data(lm)
    if data.noise_mask is None or not bool(data.noise_mask.any()):
        raise NothingMemorized(
            f"{lm.name} was trained without label noise, so no training example was relabelled and "
            "there is nothing memorized to analyse: train a model with a fraction of flipped labels"
        )
    return lm, data


def _grouping(value: str) -> None:
    if value not in GROUPINGS:
        raise InvalidInputError(f"grouping must be one of {GROUPINGS}; got {value!r}")


def _epochs(run_id: str, stride: int) -> list[int]:
    epochs = sorted(c["epoch"] for c in get_run(run_id)["checkpoints"])
    picked = epochs[::stride]
    return picked if picked[-1] == epochs[-1] else [*picked, epochs[-1]]


# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class SweepConfig:
    """A model and the checkpoints swept over: the overview's accuracies, the rewinding's epochs."""

    model: ModelRef  # the run; its epoch is the "final" model (memorized list, rewinding)
    stride: int = 1  # every stride-th checkpoint (the last always)
    grouping: str = "paper"  # rewinding's layer groups (analysis.memorization.layer_groups)

    def __post_init__(self) -> None:
        if self.stride < 1:
            raise InvalidInputError(f"stride must be 1 or more; got {self.stride}")
        _grouping(self.grouping)


@dataclass(frozen=True, kw_only=True)
class Overview:
    epochs: list[int]
    clean_acc: np.ndarray  # (E,) on the clean training examples
    noisy_acc: np.ndarray  # (E,) on the relabelled ones, under their noisy labels (memorized share)
    noisy_true_acc: np.ndarray  # (E,) on the relabelled ones, under their original labels
    test_acc: np.ndarray  # (E,)
    noise_fraction: float
    noisy_indices: np.ndarray  # (M,) training indices of the relabelled examples
    memorized: np.ndarray  # (M,) bool: predicted as the noisy label by the model at `model.epoch`
    true_labels: np.ndarray  # (M,)
    noisy_labels: np.ndarray  # (M,)
    predictions: np.ndarray  # (M,) the model's predictions for them


class _Checkpoints(Mapping):
    """{epoch: state} of a run, each read from disk when asked for (not all at once)."""

    def __init__(self, run_id: str, epochs: list[int]) -> None:
        self.run_id, self.epochs = run_id, epochs

    def __getitem__(self, epoch: int) -> dict[str, torch.Tensor]:
        return load_state(self.run_id, epoch)

    def __iter__(self):
        return iter(self.epochs)

    def __len__(self) -> int:
        return len(self.epochs)


@job_kind("memorization_overview")
def overview_job(ctx: JobContext, cfg: SweepConfig) -> Overview:
    lm, data = _noisy_model(cfg.model, ctx.device)
    x, y, mask = data.train.images, data.train.labels, data.noise_mask
    ni = torch.nonzero(mask).flatten()
    epochs = _epochs(cfg.model.run_id, cfg.stride)
    model = lm.model
    curves = memorization_curves(
        model,
        _Checkpoints(cfg.model.run_id, epochs),
        x,
        y,
        mask,
        data.original_labels,
        data.test.images,
        data.test.labels,
        progress=stage(ctx, 0.0, 0.95),
    )
    model.load_state_dict(load_state(cfg.model.run_id, cfg.model.epoch))
    pred = evaluate(model, x[ni]).predictions
    return Overview(
        epochs=curves.epochs,
        clean_acc=curves.clean_acc,
        noisy_acc=curves.noisy_acc,
        noisy_true_acc=curves.noisy_true_acc,
        test_acc=curves.test_acc,
        noise_fraction=float(mask.float().mean()),
        noisy_indices=ni.numpy(),
        memorized=(pred == y[ni]).numpy(),
        true_labels=data.original_labels[ni].numpy(),
        noisy_labels=y[ni].numpy(),
        predictions=pred.numpy(),
    )


# ---------------------------------------------------------------------------------------------

GRADIENT_SOURCES = ("training", "checkpoints")


@dataclass(frozen=True, kw_only=True)
class GradientsConfig:
    model: ModelRef
    source: str = "checkpoints"  # "training": the sums recorded while each epoch trained (the paper's;
    # the page's default); "checkpoints": recomputed at each saved
    # checkpoint's fixed weights, the default here because results stored
    # (or exported) before the record existed were computed that way
    grouping: str = "paper"
    stride: int = 1  # checkpoints only
    batch_size: int = 512  # checkpoints only

    def __post_init__(self) -> None:
        if self.stride < 1 or self.batch_size < 1:
            raise InvalidInputError(f"stride and batch size are 1 or more; got {self}")
        if self.source not in GRADIENT_SOURCES:
            raise InvalidInputError(f"source must be one of {GRADIENT_SOURCES}; got {self.source!r}")
        _grouping(self.grouping)


@dataclass(frozen=True, kw_only=True)
class GradientsResult:
    epochs: list[int]
    groups: list[str]
    clean_norm: np.ndarray  # (E, G)
    noisy_norm: np.ndarray  # (E, G)
    cosine: np.ndarray  # (E, G)


class NoGradientRecord(InvalidInputError):
    """The run has no in-training gradient record (trained before Lenscape kept one, or imported)."""


def _stacked(epochs: list[int], accounts: list[GradientAccount]) -> GradientsResult:
    return GradientsResult(
        epochs=epochs,
        groups=accounts[0].groups,
        clean_norm=np.stack([a.clean_norm for a in accounts]),
        noisy_norm=np.stack([a.noisy_norm for a in accounts]),
        cosine=np.stack([a.cosine for a in accounts]),
    )


def recorded_gradients(run: dict, model: torch.nn.Module, grouping: str = "paper") -> GradientsResult:
    """The per-epoch, per-parameter sums the trainer stored in run.json, gathered into `model`'s
    layer groups."""
    rec = run.get("gradients")
    if not rec or not rec.get("epochs"):
        raise NoGradientRecord(
            f"{run.get('name', 'this run')} has no gradients recorded during training (it was "
            "trained before Lenscape kept them, or imported): use the checkpoint version, or "
            "train the recipe again"
        )
    groups = layer_groups(model, grouping)
    accounts = [
        group_account(
            ParamGradients(
                names=rec["names"],
                numel=np.array(rec["numel"]),
                clean_norm=np.array(rec["clean_norm"][i]),
                noisy_norm=np.array(rec["noisy_norm"][i]),
                cosine=np.array(rec["cosine"][i]),
            ),
            groups,
        )
        for i in range(len(rec["epochs"]))
    ]
    return _stacked(list(rec["epochs"]), accounts)


@job_kind("memorization_gradients")
def gradients_job(ctx: JobContext, cfg: GradientsConfig) -> GradientsResult:
    lm, data = _noisy_model(cfg.model, ctx.device)
    if cfg.source == "training":
        return recorded_gradients(get_run(cfg.model.run_id), lm.model, cfg.grouping)
    epochs = _epochs(cfg.model.run_id, cfg.stride)
    accounts: list[GradientAccount] = []
    for i, e in enumerate(epochs):
        lm.model.load_state_dict(load_state(cfg.model.run_id, e))
        accounts.append(
            gradient_account(
                lm.model,
                data.train.images,
                data.train.labels,
                data.noise_mask,
                cfg.batch_size,
                stage(ctx, i / len(epochs), (i + 1) / len(epochs), f"epoch {e}"),
                cfg.grouping,
            )
        )
    return _stacked(epochs, accounts)


# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RewindResult:
    epochs: list[int]
    groups: list[str]
    clean_acc: np.ndarray  # (G, E) after rewinding group g to epoch e
    noisy_acc: np.ndarray  # (G, E) on the relabelled examples under their noisy labels
    test_acc: np.ndarray  # (G, E)
    final: dict  # the final model's {clean, noisy, test}


@job_kind("memorization_rewinding", lane="long")
def rewinding_job(ctx: JobContext, cfg: SweepConfig) -> RewindResult:
    lm, data = _noisy_model(cfg.model, ctx.device)
    x, y, mask = data.train.images, data.train.labels, data.noise_mask
    final = {k: v.clone() for k, v in lm.model.state_dict().items()}
    groups = layer_groups(lm.model, cfg.grouping)
    epochs = _epochs(cfg.model.run_id, cfg.stride)

    def accs():
        return (
            evaluate(lm.model, x[~mask], y[~mask]).accuracy,
            evaluate(lm.model, x[mask], y[mask]).accuracy,
            evaluate(lm.model, data.test.images, data.test.labels).accuracy,
        )

    base = accs()
    out = np.zeros((3, len(groups), len(epochs)))
    for j, e in enumerate(epochs):
        early = {k: v.to(ctx.device) for k, v in load_state(cfg.model.run_id, e).items()}
        for g, names in enumerate(groups.values()):
            lm.model.load_state_dict(rewound(final, early, names))
            out[:, g, j] = accs()
            ctx.progress((j * len(groups) + g + 1) / (len(epochs) * len(groups)), f"epoch {e} · {list(groups)[g]}")
    lm.model.load_state_dict(final)
    return RewindResult(
        epochs=epochs,
        groups=list(groups),
        clean_acc=out[0],
        noisy_acc=out[1],
        test_acc=out[2],
        final={"clean": base[0], "noisy": base[1], "test": base[2]},
    )


# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RetrainJobConfig:
    model: ModelRef
    groups: tuple[str, ...] = ()  # empty: every layer group
    retrain: RetrainConfig = field(default_factory=RetrainConfig)
    grouping: str = "paper"  # what a group is (analysis.memorization.layer_groups)

    def __post_init__(self) -> None:
        if len(set(self.groups)) != len(self.groups):
            raise InvalidInputError(f"each layer once; got {self.groups}")
        _grouping(self.grouping)


@dataclass(frozen=True, kw_only=True)
class RetrainJobResult:
    groups: list[str]
    train_acc: list[np.ndarray]  # per group, per epoch: clean examples trained on
    noisy_acc: list[np.ndarray]  # per group, per epoch: relabelled examples, noisy labels
    final_noisy: float  # the model before any retraining
    test_acc: list[float]  # per group, after retraining


@job_kind("memorization_retraining", lane="long")
def retraining_job(ctx: JobContext, cfg: RetrainJobConfig) -> RetrainJobResult:
    lm, data = _noisy_model(cfg.model, ctx.device)
    x, y, mask = data.train.images, data.train.labels, data.noise_mask
    final = {k: v.clone() for k, v in lm.model.state_dict().items()}
    initial = {k: v.to(ctx.device) for k, v in load_state(cfg.model.run_id, _epochs(cfg.model.run_id, 1)[0]).items()}
    all_groups = layer_groups(lm.model, cfg.grouping)
    groups = list(cfg.groups) or list(all_groups)
    unknown = [g for g in groups if g not in all_groups]
    if unknown:
        raise InvalidInputError(f"no layers {unknown} in {lm.name}; layers: {', '.join(all_groups)}")
    before = evaluate(lm.model, x[mask], y[mask]).accuracy
    tr, nz, te = [], [], []
    for i, g in enumerate(groups):
        lm.model.load_state_dict(final)
        res = retrain_group(
            lm.model,
            initial,
            g,
            x,
            y,
            mask,
            cfg.retrain,
            stage(ctx, i / len(groups), (i + 1) / len(groups), g),
            cfg.grouping,
        )
        tr.append(res.train_acc)
        nz.append(res.noisy_acc)
        te.append(evaluate(lm.model, data.test.images, data.test.labels).accuracy)
    lm.model.load_state_dict(final)
    return RetrainJobResult(groups=groups, train_acc=tr, noisy_acc=nz, final_noisy=before, test_acc=te)


# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class FlipJobConfig:
    model: ModelRef
    n_memorized: int = 32  # memorized examples sampled (the first of a seeded shuffle)
    n_clean: int = 32  # clean, correctly classified examples sampled
    examples: tuple[int, ...] = ()  # or exactly these training indices
    flip: FlipConfig = field(default_factory=FlipConfig)
    probe: int = 1000  # clean-train and test examples the cost is measured on
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_memorized < 0 or self.n_clean < 0 or self.probe < 1:
            raise InvalidInputError(f"need n_memorized, n_clean >= 0 and probe >= 1; got {self}")
        if not self.examples and self.n_memorized + self.n_clean == 0:
            raise InvalidInputError("choose at least one example to analyse")


@dataclass(frozen=True, kw_only=True)
class FlipJobResult:
    examples: np.ndarray  # (K,) training indices
    kind: list[str]  # "memorized" / "clean" / "noisy, not memorized" per example
    n_neurons: np.ndarray  # (K,)
    flipped: np.ndarray  # (K,)
    stopped: list[str]
    neurons: list[list[tuple[int, int]]]
    layers: list[str]
    layer_units: list[int]
    clean_acc: np.ndarray  # (K,) clean-train probe accuracy with the example's neurons removed
    test_acc: np.ndarray  # (K,) test probe accuracy with them removed
    base_clean_acc: float
    base_test_acc: float
    labels: np.ndarray  # (K,) training labels (noisy where relabelled)
    true_labels: np.ndarray  # (K,)


@job_kind("memorization_flipping", lane="long")
def flipping_job(ctx: JobContext, cfg: FlipJobConfig) -> FlipJobResult:
    lm, data = _noisy_model(cfg.model, ctx.device)
    x, y, mask = data.train.images, data.train.labels, data.noise_mask
    right = evaluate(lm.model, x).predictions == y
    gen = torch.Generator().manual_seed(cfg.seed)
    if cfg.examples:
        if max(cfg.examples) >= len(y) or min(cfg.examples) < 0:
            raise InvalidInputError(f"training indices are in [0, {len(y)}); got {list(cfg.examples)}")
        examples = torch.tensor(cfg.examples)
    else:
        mem = torch.nonzero(mask & right).flatten()
        cln = torch.nonzero(~mask & right).flatten()
        if cfg.n_memorized and not len(mem):
            raise InvalidInputError(
                f"{lm.name} predicts none of its relabelled examples with their noisy label: "
                "nothing is memorized yet (train longer, or a larger model)"
            )
        examples = torch.cat(
            [
                mem[torch.randperm(len(mem), generator=gen)[: cfg.n_memorized]],
                cln[torch.randperm(len(cln), generator=gen)[: cfg.n_clean]],
            ]
        )
    kinds = [
        "memorized" if mask[t] and right[t] else "clean" if not mask[t] else "noisy, not memorized"
        for t in examples.tolist()
    ]
    probe_c = torch.nonzero(~mask).flatten()[torch.randperm(int((~mask).sum()), generator=gen)[: cfg.probe]]
    probe_t = torch.randperm(len(data.test.labels), generator=gen)[: cfg.probe]
    xc, yc = x[probe_c], y[probe_c]
    xt, yt = data.test.images[probe_t], data.test.labels[probe_t]
    # batches of examples are independent pieces (an example's result does not depend on the others
    # analysed with it): side by side on a Ray cluster, the model and the data sent once by reference
    shared = [ctx.share_model(lm), *(ctx.share(v) for v in (x, y, xc, yc, xt, yt))]
    size = max(FLIP_PIECE, cfg.flip.group_size)
    batches = [examples[i : i + size] for i in range(0, len(examples), size)]
    parts = ctx.map(
        flip_piece,
        [(*shared, b, cfg.flip) for b in batches],
        f"flipping {len(examples)} examples",
        resources=Resources(cpus=1, gpus=0.25),
    )
    res = merge_flips([p[0] for p in parts])
    units = neuron_units(neuron_layers(lm.model))
    return FlipJobResult(
        examples=res.examples,
        kind=kinds,
        n_neurons=res.n_neurons,
        flipped=res.flipped,
        stopped=res.stopped,
        neurons=res.neurons,
        layers=res.layers,
        layer_units=units,
        clean_acc=np.concatenate([p[1] for p in parts]),
        test_acc=np.concatenate([p[2] for p in parts]),
        base_clean_acc=evaluate(lm.model, xc, yc).accuracy,
        base_test_acc=evaluate(lm.model, xt, yt).accuracy,
        labels=y[examples].numpy(),
        true_labels=data.original_labels[examples].numpy(),
    )


FLIP_PIECE = 4  # examples per piece


def flip_piece(
    model: ModelPayload,
    x: torch.Tensor,
    y: torch.Tensor,
    xc: torch.Tensor,
    yc: torch.Tensor,
    xt: torch.Tensor,
    yt: torch.Tensor,
    examples: torch.Tensor,
    flip: FlipConfig,
    *,
    device,
) -> tuple[FlipResult, np.ndarray, np.ndarray]:
    """Neuron flipping of a batch of examples, and what removing each one's neurons costs on the
    clean-train and test probes (a piece: see backend/pieces.py)."""
    net = payload_model(model, device)
    res = flip_neurons(net, x, y, examples, flip, lambda f, m: piece_progress(0.9 * f, m))
    clean = np.array([masked_accuracy(net, xc, yc, ns) for ns in res.neurons])
    test = np.array([masked_accuracy(net, xt, yt, ns) for ns in res.neurons])
    return res, clean, test


def merge_flips(parts: list[FlipResult]) -> FlipResult:
    """Consecutive batches' results as one."""
    return FlipResult(
        layers=parts[0].layers,
        **{
            f: concat(parts, f)
            for f in ("examples", "flipped", "n_neurons", "stopped", "neurons", "batch_acc_drop", "batches")
        },
    )


# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class TiedDropoutConfig:
    model: ModelRef

    def __post_init__(self) -> None:
        if not isinstance(self.model, ModelRef):
            raise InvalidInputError(f"a model reference is needed; got {self.model!r}")


@dataclass(frozen=True, kw_only=True)
class TiedDropoutResult:
    kept: dict  # {memorized, clean, test}: accuracies with the memorization neurons kept
    dropped: dict  # the same with them dropped
    p_gen: float
    p_mem: float
    n_noisy: int


@job_kind("memorization_tied_dropout")
def tied_dropout_job(ctx: JobContext, cfg: TiedDropoutConfig) -> TiedDropoutResult:
    lm, data = _noisy_model(cfg.model, ctx.device)
    x, y, mask = data.train.images, data.train.labels, data.noise_mask
    ids = torch.arange(len(y))
    ctx.progress(0.1, "accuracies with the memorization neurons kept and dropped")
    acc = tied_dropout_accuracies(
        lm.model,
        {
            "memorized": (x[mask], y[mask], ids[mask]),
            "clean": (x[~mask], y[~mask], ids[~mask]),
            "test": (data.test.images, data.test.labels, None),
        },
    )
    return TiedDropoutResult(
        kept=acc["kept"], dropped=acc["dropped"], p_gen=lm.arch.p_gen, p_mem=lm.arch.p_mem, n_noisy=int(mask.sum())
    )
