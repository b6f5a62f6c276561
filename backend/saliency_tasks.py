"""Saliency jobs: predictions for the image picker, attribution grids, the BlockMNIST null-mass
check, DiffROAR retraining and the model randomization check."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from lenscape.analysis.evaluation import evaluate
from lenscape.analysis.roar import DiffRoarConfig, DiffRoarResult, diffroar
from lenscape.analysis.saliency import METHOD_LABELS, SaliencyConfig, SaliencyResult, compute_saliency, null_mass
from lenscape.analysis.sanity import MAP_MODES, ORDERS, RandomizationResult, model_randomization
from lenscape.backend.jobs import JobCancelled, JobContext, ModelRef, job_kind, stage
from lenscape.backend.pieces import ModelPayload, Resources, concat, payload_model, piece_progress
from lenscape.models.data import ImageData, load_data, null_block_mask
from lenscape.errors import InvalidInputError
from lenscape.models.training import TrainConfig, fit_and_score
from lenscape.models.zoo import LoadedModel, load_model, training_data

SPLITS = ("test", "train")


def _load(r: ModelRef, ctx: JobContext, split: str = "test", lazy: bool = False) -> tuple[LoadedModel, ImageData]:
    """The model and the images of `split`, with their true labels. The training split is the
    set the model was trained on (a recipe's subset: index i is training example i everywhere, the
    Memorization and Similarity views included), with its original labels, not the flipped ones."""
    lm = load_model(r.run_id, r.epoch, device=ctx.device)
    if lm.data is None:
        raise InvalidInputError(f"{lm.name} has no data set attached")
    if split == "test":  # lazy: an image folder's images decoded as they are asked for (a page of them)
        return lm, load_data(lm.data, "test", lazy=lazy)
    prepared = training_data(lm)
    return lm, prepared.train.with_labels(prepared.original_labels)


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise InvalidInputError(f"images come from the 'test' or the 'train' split; got {split!r}")


@dataclass(frozen=True, kw_only=True)
class PredictConfig:
    model: ModelRef
    split: str = "test"

    def __post_init__(self) -> None:
        _check_split(self.split)


@job_kind("predict")
def predict_job(ctx: JobContext, cfg: PredictConfig) -> np.ndarray:
    """(N, C) probabilities over a split: what the image picker filters on."""
    lm, data = _load(cfg.model, ctx, cfg.split)
    ctx.progress(0.1, f"predicting {len(data):,} {cfg.split} images")
    return evaluate(lm.model, data.x(), probabilities=True).probabilities.numpy()


@dataclass(frozen=True, kw_only=True)
class GridConfig:
    model: ModelRef
    indices: tuple[int, ...]
    methods: tuple[SaliencyConfig, ...]
    split: str = "test"  # "train": the model's training examples, true labels ("true" target)

    def __post_init__(self) -> None:
        _check_indices(self.indices)
        _check_split(self.split)
        if not self.methods:
            raise InvalidInputError("choose at least one saliency method")


def _check_indices(indices: tuple[int, ...]) -> None:
    if not indices:
        raise InvalidInputError("choose at least one image")
    if min(indices) < 0:
        raise InvalidInputError(f"image indices are 0 or more; got {min(indices)}")


@job_kind("saliency")
def saliency_job(ctx: JobContext, cfg: GridConfig) -> list[SaliencyResult]:
    lm, data = _load(cfg.model, ctx, cfg.split, lazy=True)
    if max(cfg.indices) >= len(data):
        raise InvalidInputError(
            f"the {cfg.split} split has {len(data):,} images (indices 0 to {len(data) - 1}); "
            f"got index {max(cfg.indices)}"
        )
    idx = torch.tensor(cfg.indices, dtype=torch.long)
    x, y = data.x(idx), data.labels[idx]
    # methods × chunks of images are independent pieces (side by side on a Ray cluster); the model
    # and images go to the workers once, by reference
    model, xs, ys = ctx.share_model(lm), ctx.share(x), ctx.share(y)
    chunks = [
        (m, start, min(start + SALIENCY_PIECE, len(x)))
        for m in cfg.methods
        for start in range(0, len(x), SALIENCY_PIECE)
    ]
    parts = ctx.map(
        saliency_piece_or_error,
        [(model, xs, ys, m, a, b) for m, a, b in chunks],
        f"{len(cfg.methods)} method{'s' if len(cfg.methods) > 1 else ''} on {len(x)} images",
        resources=Resources(cpus=1, gpus=0.25),
    )
    return with_failures(
        cfg.methods, [[p for (m, _, _), p in zip(chunks, parts) if m is method] for method in cfg.methods]
    )


class MethodsFailed(Exception):
    """Every method of a saliency grid failed."""


def with_failures(methods: tuple[SaliencyConfig, ...], parts: list[list[SaliencyResult | str]]) -> list[SaliencyResult]:
    """Each method's merged result; a method whose pieces failed gets an empty result that says why,
    so the methods that worked are still shown. If none worked, the job fails with every reason."""
    errors = [next((p for p in mine if isinstance(p, str)), "") for mine in parts]
    done = [merge_saliency(mine) for mine, err in zip(parts, errors) if not err]
    if not done:
        raise MethodsFailed("; ".join(f"{METHOD_LABELS[m.method]}: {e}" for m, e in zip(methods, errors)))
    done_iter = iter(done)
    return [
        replace(done[0], attributions=np.zeros((0,), np.float32), config=m, delta=None, seconds=0.0, error=err)
        if err
        else next(done_iter)
        for m, err in zip(methods, errors)
    ]


def saliency_piece_or_error(*args, device) -> SaliencyResult | str:
    """saliency_piece, or the reason it failed (a method that cannot run on this model must not take
    the other methods' maps with it)."""
    try:
        return saliency_piece(*args, device=device)
    except JobCancelled:
        raise
    except Exception as exc:  # noqa: BLE001 - any method's failure, reported per method
        return f"{type(exc).__name__}: {str(exc)[:300]}"


SALIENCY_PIECE = 16  # images per piece: the answer does not depend on it (seeded per image position)


def saliency_piece(
    model: ModelPayload, x: torch.Tensor, y: torch.Tensor, method: SaliencyConfig, start: int, stop: int, *, device
) -> SaliencyResult:
    """One method's maps of images [start, stop) (a piece: see backend/pieces.py)."""
    return compute_saliency(
        payload_model(model, device),
        x[start:stop],
        y[start:stop],
        method,
        lambda f, msg: piece_progress(f, f"{METHOD_LABELS[method.method]}: {msg}"),
        offset=start,
    )


def merge_saliency(parts: list[SaliencyResult]) -> SaliencyResult:
    """The result of a method over consecutive chunks of images, as if computed in one go."""
    delta = None if parts[0].delta is None else concat(parts, "delta")
    return replace(
        parts[0],
        **{f: concat(parts, f) for f in ("attributions", "predictions", "confidences", "targets")},
        delta=delta,
        seconds=sum(p.seconds for p in parts),
    )


@dataclass(frozen=True, kw_only=True)
class NullMassConfig:
    models: tuple[ModelRef, ...]
    methods: tuple[SaliencyConfig, ...]
    k_grid: tuple[float, ...] = (0.01, 0.05, 0.1, 0.2)
    n_images: int = 500

    def __post_init__(self) -> None:
        if not self.models or not self.methods:
            raise InvalidInputError("the null-mass check needs at least one model and one method")
        if not self.k_grid or not all(0 < k <= 1 for k in self.k_grid):
            raise InvalidInputError(f"k values are fractions in (0, 1]; got {self.k_grid}")
        if self.n_images < 1:
            raise InvalidInputError(f"the null-mass check needs at least one image; got {self.n_images}")


@dataclass(frozen=True, kw_only=True)
class NullMassResult:
    model_names: list[str]
    methods: list[str]
    k_grid: np.ndarray
    null_mass: np.ndarray  # (models, methods, K, N) per image
    null_share: float  # the null block's share of the coordinates: a uniform map's value
    examples: np.ndarray  # (models, methods, E, C, H, W) attributions of the first images
    example_images: np.ndarray  # (E, C, H, W)
    example_signal_top: np.ndarray  # (E,)


@job_kind("null_mass")
def null_mass_job(ctx: JobContext, cfg: NullMassConfig) -> NullMassResult:
    names, masses, examples = [], [], []
    test = None
    for i, r in enumerate(cfg.models):
        lm, test = _load(r, ctx)
        if test.signal_top is None:
            raise InvalidInputError(
                f"{lm.name} was not trained on BlockMNIST: the null-mass check needs to know "
                "which block holds the signal"
            )
        x, y = test.x(slice(0, cfg.n_images)), test.labels[: cfg.n_images]
        names.append(lm.name)
        one = stage(ctx, i / len(cfg.models), (i + 1) / len(cfg.models), lm.name)
        res = null_mass(
            lm.model, x, y, null_block_mask(test.signal_top[: cfg.n_images]), cfg.methods, cfg.k_grid, progress=one
        )
        masses.append(res.mass)
        examples.append(res.examples)
    return NullMassResult(
        model_names=names,
        methods=[m.method for m in cfg.methods],
        k_grid=np.array(cfg.k_grid),
        null_mass=np.array(masses),
        null_share=float(null_block_mask(test.signal_top[:1]).float().mean()),
        examples=np.array(examples),
        example_images=test.x(slice(0, 4)).numpy(),
        example_signal_top=test.signal_top[:4].numpy(),
    )


@dataclass(frozen=True, kw_only=True)
class DiffRoarJobConfig:
    model: ModelRef
    roar: DiffRoarConfig
    saliency: SaliencyConfig = SaliencyConfig(target="true")  # the paper ranks by the true label's gradient

    def __post_init__(self) -> None:
        if not isinstance(self.roar, DiffRoarConfig) or not isinstance(self.saliency, SaliencyConfig):
            raise InvalidInputError(f"DiffROAR needs a DiffRoarConfig and a SaliencyConfig; got {self}")


@job_kind("diffroar", lane="long")
def diffroar_job(ctx: JobContext, cfg: DiffRoarJobConfig) -> DiffRoarResult:
    lm = load_model(cfg.model.run_id, cfg.model.epoch, device=ctx.device)
    if not lm.record.get("config"):
        raise InvalidInputError(
            f"{lm.name} was imported, not trained here: DiffROAR retrains its recipe, "
            "so it needs a model trained in Lenscape"
        )
    recipe = TrainConfig.from_dict(lm.record["config"])
    # ROAR measures how predictive the kept coordinates are: retrain with plain training, even when
    # the attributions come from an adversarially trained model
    recipe = replace(
        recipe,
        epochs=cfg.roar.epochs,
        label_noise=0.0,
        train_subset=cfg.roar.train_subset,
        adversarial=None,
        p_gen=0.0,
        p_mem=0.0,
    )
    train, test = load_data(recipe.data, "train").head(cfg.roar.train_subset), load_data(recipe.data, "test")
    methods, calls = cfg.roar.all_methods, []

    def on_pieces(fn, items: list[tuple]) -> list[float]:
        """The retrainings of one method as independent pieces (side by side on a Ray cluster), each
        masked data set shipped once, by reference, to every seed that trains on it."""
        mi, shared = len(calls), {}
        calls.append(mi)

        def share(images: torch.Tensor, data: ImageData):
            if id(images) not in shared:
                shared[id(images)] = ctx.share(data.with_images(images))
            return shared[id(images)]

        pieces = [(replace(recipe, seed=seed), share(tr, train), share(te, test)) for tr, _, te, _, seed in items]
        return ctx.map(
            fit_and_score_piece,
            pieces,
            f"{methods[mi]}: retrainings",
            lo=(mi + 0.1) / len(methods),
            hi=(mi + 1) / len(methods),
            resources=Resources(cpus=1, gpus=0.25, threads=1),
        )

    return diffroar(
        lm.model,
        (train.images, train.labels),
        (test.images, test.labels),
        _no_local_retraining,
        cfg.roar,
        cfg.saliency,
        map=on_pieces,
        progress=ctx.progress,
    )


def _no_local_retraining(*_):
    raise AssertionError("the DiffROAR job retrains through its pieces")


def fit_and_score_piece(recipe: TrainConfig, train: ImageData, test: ImageData, *, device) -> float:
    """One DiffROAR retraining (a piece: see backend/pieces.py)."""
    return fit_and_score(recipe, train, test, device)


@dataclass(frozen=True, kw_only=True)
class RandomizationConfig:
    model: ModelRef
    indices: tuple[int, ...]
    methods: tuple[SaliencyConfig, ...]
    order: str = "cascading"  # or "independent": one layer at a time (Adebayo et al. report both)
    map_mode: str = "abs"  # or "signed"
    seed: int = 0

    def __post_init__(self) -> None:
        if len(self.indices) < 2:
            raise InvalidInputError(
                f"the randomization check needs at least 2 images (maps of different images "
                f"are one of its baselines); got {len(self.indices)}"
            )
        _check_indices(self.indices)
        if not self.methods:
            raise InvalidInputError("choose at least one saliency method")
        if self.order not in ORDERS or self.map_mode not in MAP_MODES:
            raise InvalidInputError(
                f"order must be one of {ORDERS} and map_mode one of {MAP_MODES}; got {self.order!r}, {self.map_mode!r}"
            )


@job_kind("randomization")
def randomization_job(ctx: JobContext, cfg: RandomizationConfig) -> list[RandomizationResult]:
    lm, test = _load(cfg.model, ctx)
    idx = torch.tensor(cfg.indices, dtype=torch.long)
    x = test.x(idx)
    target = evaluate(lm.model, x).predictions  # the original model's predictions stay the targets
    out = []
    for i, m in enumerate(cfg.methods):
        ctx.progress(i / len(cfg.methods), f"randomizing layers ({cfg.order}) for {m.method}")
        out.append(model_randomization(lm.model, x, target, m, order=cfg.order, map_mode=cfg.map_mode, seed=cfg.seed))
    return out
