"""Loss-landscape jobs: a 1-D or 2-D surface around a model, the interpolation between two
checkpoints, the training trajectory over the plane of its two principal directions, and the top
Hessian eigenvalues (analysis/landscape.py does the maths)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lenscape.analysis.evaluation import random_subset
from lenscape.analysis.hessian import HessianEigs, hessian_top_eigenvalues, hessian_trace, spectral_density
from lenscape.analysis.landscape import (
    Curve,
    DirectionConfig,
    Surface,
    Trajectory,
    batchnorm_layers,
    convexity_map,
    evaluate_points,
    grid_points,
    interpolation,
    random_directions,
    surface,
    trajectory,
)
from lenscape.backend.codec import to_jsonable
from lenscape.backend.jobs import JobContext, ModelRef, code_version, job_kind, stage
from lenscape.backend.limits import check_seconds, seconds_per_example
from lenscape.backend.pieces import ModelPayload, Resources, payload_model, piece_progress
from lenscape.models.data import load_data
from lenscape.models.paths import cache_dir
from lenscape.errors import InvalidInputError
from lenscape.models.zoo import LoadedModel, get_run, iter_states, load_model, load_state, training_data


@dataclass(frozen=True, kw_only=True)
class EvalSet:
    split: str = "test"
    n_examples: int = 2000  # the first n examples of the split (0 = all)

    def __post_init__(self) -> None:
        if self.split not in ("train", "test"):
            raise InvalidInputError(f"split must be 'train' or 'test'; got {self.split!r}")
        if self.n_examples < 0:
            raise InvalidInputError(f"n_examples is 0 (all) or more; got {self.n_examples}")


def _examples(lm: LoadedModel, data: EvalSet) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images and labels: the training split as the model was trained on it (its labels)."""
    if lm.data is None:
        raise InvalidInputError(f"{lm.name} has no data set attached")
    split = training_data(lm).train if data.split == "train" else load_data(lm.data, "test")
    split = split.head(data.n_examples)
    return split.images, split.labels


def _loss_on(lm: LoadedModel, data: EvalSet, device) -> Callable[[torch.nn.Module], torch.Tensor]:
    """model ↦ mean cross-entropy on `data`, the examples on the device once (for Hessian products)."""
    images, labels = _examples(lm, data)
    x, y = images.to(device).float().div_(255), labels.to(device)
    lm.model.eval()
    return lambda m: F.cross_entropy(m(x), y)


def _grid(lo: float, hi: float, n: int) -> np.ndarray:
    return np.linspace(lo, hi, n)


@dataclass(frozen=True, kw_only=True)
class BNSubset:
    """The fixed subset from which BatchNorm statistics are recomputed at every point (beyond the
    official code, which keeps the stored ones: ALGORITHMS.md section 5, "Mode")."""

    n_examples: int = 512  # training examples: one train-mode pass each point; at 512 a channel's mean
    seed: int = 0  # rests on 512·H·W values, and the pass costs a fraction of the evaluation's

    def __post_init__(self) -> None:
        if not 2 <= self.n_examples <= 10_000:
            raise InvalidInputError(
                f"recomputing BatchNorm statistics needs 2 to 10,000 examples; got {self.n_examples}"
            )


def _bn_examples(lm: LoadedModel, spec: BNSubset | None) -> torch.Tensor | None:
    """uint8 images: the same seeded draw from the model's training split for every point (None
    without `spec`). A model without BatchNorm is refused: there is nothing to recompute."""
    if spec is None:
        return None
    if not batchnorm_layers(lm.model):
        raise InvalidInputError(
            f"{lm.name} has no BatchNorm layers: there are no statistics to recompute "
            "(leave 'Recompute BatchNorm statistics' off)"
        )
    train = training_data(lm).train
    idx = random_subset(len(train), spec.n_examples, torch.Generator().manual_seed(spec.seed))
    return train.images[idx]


def _passes(n_eval: int, bn: torch.Tensor | None) -> int:
    """Examples forwarded per point: the evaluation, and with recomputed statistics a second one
    after a pass over the subset."""
    return n_eval if bn is None else 2 * n_eval + len(bn)


@dataclass(frozen=True, kw_only=True)
class SurfaceConfig:
    model: ModelRef
    directions: DirectionConfig = DirectionConfig()
    dims: int = 2
    lo: float = -1.0
    hi: float = 1.0
    resolution: int = 21
    data: EvalSet = EvalSet()
    recompute_bn: BNSubset | None = None  # also the figures with BatchNorm statistics recomputed per point

    def __post_init__(self) -> None:
        if self.dims not in (1, 2):
            raise InvalidInputError(f"a surface has 1 or 2 directions; got {self.dims}")
        if not self.lo < self.hi:
            raise InvalidInputError(f"the range needs lo < hi; got [{self.lo}, {self.hi}]")
        if not 2 <= self.resolution <= 201:
            raise InvalidInputError(f"resolution must be between 2 and 201 points per axis; got {self.resolution}")


@job_kind("landscape_surface")
def surface_job(ctx: JobContext, cfg: SurfaceConfig) -> Surface:
    """The grid's points that an earlier grid of the same model, directions and data already
    evaluated (a coarser one being refined, or a smaller range) are taken from a per-plane point
    cache; only the others are evaluated. With `recompute_bn`, the figures with recomputed
    statistics have a cache of their own (per subset), the stored-statistics ones share the plain one."""
    lm = load_model(cfg.model.run_id, cfg.model.epoch, device=ctx.device)
    images, labels = _examples(lm, cfg.data)
    bn = _bn_examples(lm, cfg.recompute_bn)
    xs = _grid(cfg.lo, cfg.hi, cfg.resolution)
    ys = xs if cfg.dims == 2 else None
    check_seconds(
        f"a {cfg.resolution}{'×' + str(cfg.resolution) if cfg.dims == 2 else ''}-point surface over "
        f"{len(labels):,} examples",
        len(xs) ** cfg.dims * _passes(len(labels), bn) * seconds_per_example(lm, ctx.device),
    )
    dirs = random_directions(lm.model, cfg.dims, cfg.directions)
    points = grid_points(xs, ys)
    # tiles of the grid are independent pieces: side by side on a Ray cluster, the model loaded there
    # with the safe loader, the directions and examples sent once by reference
    shared = (ctx.share_model(lm), ctx.share(dirs), ctx.share(images), ctx.share(labels))
    sets = [(None, None)] if bn is None else [(None, None), (ctx.share(bn), cfg.recompute_bn)]
    out = [
        _cached_points(
            ctx, shared, points, bn_ref, _plane_cache(cfg, ctx.device, spec), i / len(sets), (i + 1) / len(sets)
        )
        for i, (bn_ref, spec) in enumerate(sets)
    ]
    shape = (len(ys) if ys is not None else 1, len(xs))
    again = (
        {}
        if bn is None
        else {"loss_recomputed": out[1][0].reshape(shape), "accuracy_recomputed": out[1][1].reshape(shape)}
    )
    return Surface(
        xs=xs,
        ys=ys if ys is not None else np.zeros(1),
        loss=out[0][0].reshape(shape),
        accuracy=out[0][1].reshape(shape),
        reused=sum(o[2] for o in out),
        **again,
    )


def _cached_points(
    ctx: JobContext, shared: tuple, points: np.ndarray, bn, path: Path, lo: float, hi: float
) -> tuple[np.ndarray, np.ndarray, int]:
    """(loss, accuracy, points reused): the points `path` knows are read, the others evaluated in
    tiles (with BatchNorm statistics recomputed from `bn`, where given) and added to it."""
    known = _read_points(path)
    keys = [_point_key(p) for p in points]
    missing = [i for i, k in enumerate(keys) if k not in known]
    loss, acc = np.zeros(len(points)), np.zeros(len(points))
    for i, k in enumerate(keys):
        if k in known:
            loss[i], acc[i] = known[k]
    if missing:
        what = "recomputed BatchNorm statistics" if bn is not None else "stored statistics"
        ctx.progress(
            lo, f"{what}: {len(points) - len(missing)} of {len(points)} points known; evaluating {len(missing)}"
        )
        tiles = [t for t in np.array_split(np.array(missing), -(-len(missing) // TILE_POINTS)) if len(t)]
        done = ctx.map(
            surface_tile,
            [(*shared, points[t], bn) for t in tiles],
            f"{len(missing)} points in {len(tiles)} tiles ({what})",
            lo=lo,
            hi=hi,
            resources=Resources(cpus=1, gpus=0.5),
        )
        new_loss, new_acc = np.concatenate([d[0] for d in done]), np.concatenate([d[1] for d in done])
        loss[missing], acc[missing] = new_loss, new_acc
        known.update({keys[i]: (lv, av) for i, lv, av in zip(missing, new_loss, new_acc)})
        _write_points(path, known)
    return loss, acc, len(points) - len(missing)


TILE_POINTS = 16  # grid points per piece (a 21×21 grid is 28 tiles)


def surface_tile(
    model: ModelPayload,
    dirs,
    images: torch.Tensor,
    labels: torch.Tensor,
    points: np.ndarray,
    bn_examples: torch.Tensor | None = None,
    *,
    device,
) -> tuple[np.ndarray, np.ndarray]:
    """(loss, accuracy) at a tile's grid points (a piece: see backend/pieces.py), with BatchNorm
    statistics recomputed at each point from `bn_examples` where given. The model is built from its
    payload with the safe loader, once per worker thread; the points are applied to its weights in
    place and the weights (and statistics) put back after."""
    dirs = [{name: t.to(device) for name, t in d.items()} for d in dirs]  # no copy where already there
    return evaluate_points(
        payload_model(model, device),
        dirs,
        points,
        images,
        labels,
        progress=lambda f, m: piece_progress(f, m),
        bn_examples=bn_examples,
    )


def _point_key(p: np.ndarray) -> tuple[float, ...]:
    return tuple(round(float(v), 9) for v in p)


def _plane_cache(cfg: SurfaceConfig, device: torch.device, bn: BNSubset | None = None) -> Path:
    """One file per plane: model checkpoint, directions, data, device type and code version, and for
    figures with recomputed BatchNorm statistics the subset they were recomputed from."""
    ident = {
        "model": to_jsonable(cfg.model),
        "directions": to_jsonable(cfg.directions),
        "dims": cfg.dims,
        "data": to_jsonable(cfg.data),
        "device": torch.device(device).type,
        "code": code_version("landscape_surface"),
    }
    if bn is not None:
        ident["recompute_bn"] = to_jsonable(bn)
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:24]
    return cache_dir("landscape-points") / f"{digest}.npz"


def _read_points(path: Path) -> dict[tuple[float, ...], tuple[float, float]]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {_point_key(p): (float(lv), float(av)) for p, lv, av in zip(z["points"], z["loss"], z["acc"])}
    except (OSError, ValueError, KeyError):  # none yet, or damaged: evaluate again
        return {}


def _write_points(path: Path, known: dict) -> None:
    keys = list(known)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(
        tmp,
        points=np.array(keys, dtype=float),
        loss=np.array([known[k][0] for k in keys]),
        acc=np.array([known[k][1] for k in keys]),
    )
    os.replace(tmp, path)  # atomic: a concurrent reader sees the old or the new file


@dataclass(frozen=True, kw_only=True)
class InterpolationConfig:
    a: ModelRef
    b: ModelRef
    lo: float = -0.5
    hi: float = 1.5
    points: int = 21
    n_examples: int = 2000  # of each split
    recompute_bn: BNSubset | None = None  # also the curves with BatchNorm statistics recomputed at each α

    def __post_init__(self) -> None:
        if not self.lo < self.hi or not 2 <= self.points <= 401:
            raise InvalidInputError(f"need lo < hi and 2 to 401 points; got [{self.lo}, {self.hi}], {self.points}")
        if self.n_examples < 0:
            raise InvalidInputError(f"n_examples is 0 (all) or more; got {self.n_examples}")


@dataclass(frozen=True, kw_only=True)
class InterpolationResult:
    train: Curve
    test: Curve


@job_kind("landscape_interpolation")
def interpolation_job(ctx: JobContext, cfg: InterpolationConfig) -> InterpolationResult:
    ra, rb = get_run(cfg.a.run_id), get_run(cfg.b.run_id)
    if ra["arch"] != rb["arch"]:
        raise InvalidInputError(
            f"{ra['name']} and {rb['name']} are of different architectures: "
            "interpolate between checkpoints of one architecture"
        )
    if ra.get("data") != rb.get("data"):
        raise InvalidInputError(f"{ra['name']} and {rb['name']} were trained on different data sets")
    lm = load_model(cfg.a.run_id, cfg.a.epoch, device=ctx.device)
    bn = _bn_examples(lm, cfg.recompute_bn)
    n = sum(len(_examples(lm, EvalSet(split=s, n_examples=cfg.n_examples))[1]) for s in ("train", "test"))
    per_point = n if bn is None else 2 * (n + len(bn))  # each split recomputes the statistics for itself
    check_seconds(
        f"a {cfg.points}-point line over {n:,} examples", cfg.points * per_point * seconds_per_example(lm, ctx.device)
    )
    sa = {k: v.to(ctx.device) for k, v in load_state(cfg.a.run_id, cfg.a.epoch).items()}
    sb = {k: v.to(ctx.device) for k, v in load_state(cfg.b.run_id, cfg.b.epoch).items()}
    alphas = _grid(cfg.lo, cfg.hi, cfg.points)
    curves = {}
    for i, split in enumerate(("train", "test")):
        images, labels = _examples(lm, EvalSet(split=split, n_examples=cfg.n_examples))
        curves[split] = interpolation(
            lm.model,
            sa,
            sb,
            alphas,
            images,
            labels,
            bn_examples=bn,
            progress=stage(ctx, i / 2, (i + 1) / 2, f"{split} set"),
        )
    return InterpolationResult(**curves)


@dataclass(frozen=True, kw_only=True)
class TrajectoryConfig:
    model: ModelRef  # the run; its checkpoints up to this epoch make the path
    resolution: int = 15
    margin: float = 0.25  # the plane extends this share beyond the path on each side
    data: EvalSet = EvalSet()

    def __post_init__(self) -> None:
        if not 2 <= self.resolution <= 101 or self.margin < 0:
            raise InvalidInputError(
                f"need 2 to 101 points per axis and margin >= 0; got {self.resolution}, {self.margin}"
            )


@dataclass(frozen=True, kw_only=True)
class TrajectoryResult:
    epochs: list[int]
    path: Trajectory
    plane: Surface  # the loss over the plane of the two principal directions


@job_kind("landscape_trajectory")
def trajectory_job(ctx: JobContext, cfg: TrajectoryConfig) -> TrajectoryResult:
    lm = load_model(cfg.model.run_id, cfg.model.epoch, device=ctx.device)
    pairs = [(e, s) for e, s in iter_states(cfg.model.run_id) if e <= lm.epoch]
    if len(pairs) < 3:
        raise InvalidInputError(
            f"{lm.name} has {len(pairs)} checkpoints up to epoch {lm.epoch}; a trajectory "
            "needs at least 3 (train it for 2 epochs or more)"
        )
    ctx.progress(0.02, f"PCA of {len(pairs)} checkpoints")
    path = trajectory([s for _, s in pairs])
    params = dict(lm.model.named_parameters())
    dirs = [
        {k: d[k].to(p.device, p.dtype) if k in d else torch.zeros_like(p) for k, p in params.items()}
        for d in path.directions
    ]
    span = [(float(c.min()), float(c.max())) for c in path.coords.T]
    axes = [
        _grid(lo - cfg.margin * (hi - lo or 1), hi + cfg.margin * (hi - lo or 1), cfg.resolution) for lo, hi in span
    ]
    images, labels = _examples(lm, cfg.data)
    plane = surface(lm.model, dirs, axes[0], axes[1], images, labels, progress=stage(ctx, 0.05, 1.0, "plane"))
    return TrajectoryResult(epochs=[e for e, _ in pairs], path=path, plane=plane)


@dataclass(frozen=True, kw_only=True)
class HessianConfig:
    model: ModelRef
    k: int = 3
    iters: int = 50  # ARPACK's restarts of the Lanczos process, at most
    restarts: int = 3  # seeded random starts (their spread shows convergence)
    seed: int = 0
    tol: float = 1e-6  # relative accuracy of each eigenvalue
    params: str = "all"  # or "weights": tensors with 2+ dimensions only (the official code)
    trace_samples: int = 50  # Hutchinson draws for tr(H) (0: none)
    density_steps: int = 30  # Lanczos steps of the eigenvalue density (0: none)
    data: EvalSet = EvalSet(split="train", n_examples=500)

    def __post_init__(self) -> None:
        if not 1 <= self.k <= 10 or self.iters < 1 or self.restarts < 1 or not 0 < self.tol < 1:
            raise InvalidInputError(f"need 1 <= k <= 10, iters >= 1, restarts >= 1, 0 < tol < 1; got {self}")
        if self.params not in ("all", "weights"):
            raise InvalidInputError(f"params is 'all' or 'weights'; got {self.params!r}")
        if self.trace_samples == 1 or not 0 <= self.trace_samples <= 10_000 or not 0 <= self.density_steps <= 1_000:
            raise InvalidInputError(f"trace samples 0 or 2-10,000, density steps 0-1,000; got {self}")


@job_kind("landscape_hessian")
def hessian_job(ctx: JobContext, cfg: HessianConfig) -> HessianEigs:
    lm = load_model(cfg.model.run_id, cfg.model.epoch, device=ctx.device)
    loss = _loss_on(lm, cfg.data, ctx.device)
    ctx.progress(0.05, "Lanczos")
    eigs = hessian_top_eigenvalues(
        lm.model, loss, k=cfg.k, iters=cfg.iters, restarts=cfg.restarts, seed=cfg.seed, tol=cfg.tol, params=cfg.params
    )
    ctx.progress(0.7, "trace and density")
    trace = hessian_trace(lm.model, loss, cfg.trace_samples, cfg.seed, cfg.params) if cfg.trace_samples else None
    density = (
        spectral_density(lm.model, loss, cfg.density_steps, 1, cfg.seed, cfg.params) if cfg.density_steps else None
    )
    return replace(eigs, trace=trace, density=density)


@dataclass(frozen=True, kw_only=True)
class ConvexityConfig:
    model: ModelRef
    directions: DirectionConfig = DirectionConfig()
    lo: float = -1.0
    hi: float = 1.0
    resolution: int = 5
    iters: int = 30
    data: EvalSet = EvalSet(split="train", n_examples=500)

    def __post_init__(self) -> None:
        if not self.lo < self.hi or not 2 <= self.resolution <= 21 or self.iters < 1:
            raise InvalidInputError(
                f"need lo < hi, 2 to 21 points per axis (each point is two power iterations) and iters >= 1; got {self}"
            )


@dataclass(frozen=True, kw_only=True)
class ConvexityMap:
    xs: np.ndarray
    ys: np.ndarray
    lambda_max: np.ndarray  # (ny, nx)
    lambda_min: np.ndarray
    ratio: np.ndarray  # |λ_min| / λ_max: near 0 = locally convex


@job_kind("landscape_convexity")
def convexity_job(ctx: JobContext, cfg: ConvexityConfig) -> ConvexityMap:
    lm = load_model(cfg.model.run_id, cfg.model.epoch, device=ctx.device)
    loss = _loss_on(lm, cfg.data, ctx.device)
    dirs = random_directions(lm.model, 2, cfg.directions)
    grid = _grid(cfg.lo, cfg.hi, cfg.resolution)
    lmax, lmin, ratio = convexity_map(lm.model, dirs, grid, grid, loss, cfg.iters, progress=ctx.progress)
    return ConvexityMap(xs=grid, ys=grid, lambda_max=lmax, lambda_min=lmin, ratio=ratio)
