"""Similarity jobs: layer × layer matrices between two models, N × N matrices across seeds,
convergence over training, all metrics for one pair of layers, and 2-D projections. Every number
comes with a null baseline: the same comparison against a randomly initialized network of the
same architecture (and, for one pair, with the examples shuffled)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from lenscape.analysis.activations import extract
from lenscape.analysis.evaluation import CONV_MODES, evaluate
from lenscape.analysis.embedding import Projection, ProjectionConfig, project
from lenscape.analysis.similarity import METRICS, score_pair, seed_matrix
from lenscape.backend.jobs import JobContext, ModelRef, job_kind, stage
from lenscape.backend.pieces import Resources
from lenscape.models.architectures import build_model
from lenscape.models.data import load_data
from lenscape.errors import InvalidInputError
from lenscape.models.zoo import LoadedModel, iter_states, load_model, training_data


@dataclass(frozen=True, kw_only=True)
class ActSpec:
    split: str = "test"
    n_examples: int = 2000  # CCA wants 5-10x more examples than features
    conv_mode: str = "pool"  # conv layers: "pool" (N, C), "flatten" (N, C·H·W), "positions" (N·H·W, C)
    seed: int = 0  # random-network baseline and shuffles

    def __post_init__(self) -> None:
        if self.split not in ("train", "test"):
            raise InvalidInputError(f"split must be 'train' or 'test'; got {self.split!r}")
        if self.n_examples < 2:
            raise InvalidInputError(f"similarity needs at least 2 examples; got {self.n_examples}")
        if self.conv_mode not in CONV_MODES:
            raise InvalidInputError(f"conv_mode must be one of {CONV_MODES}; got {self.conv_mode!r}")


def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise InvalidInputError(f"unknown metric {metric!r}; expected one of {list(METRICS)}")


def _data_x(lm: LoadedModel, spec: ActSpec) -> torch.Tensor:
    if lm.data is None:
        raise InvalidInputError(f"{lm.name} has no data set attached")
    return load_data(lm.data, spec.split).head(spec.n_examples).x()


def _random_twin(lm: LoadedModel, seed: int, device) -> torch.nn.Module:
    return build_model(lm.arch, seed=10_000 + seed).to(device).eval()


def _score(metric: str, x: torch.Tensor, y: torch.Tensor, notes: list[str]) -> float:
    value, note = score_piece(metric, x, y, device=None)
    _keep(notes, note)
    return value


def _keep(notes: list[str], note: str | None) -> None:
    if note and note not in notes:
        notes.append(note)


def score_piece(metric: str, x: torch.Tensor, y: torch.Tensor, *, device) -> tuple[float, str | None]:
    """(the metric of one pair of activation matrices, or NaN and why not): a piece."""
    return score_pair(metric, x, y)


def _on_pieces(ctx: JobContext, spans: list[tuple[str, float, float]]):
    """A `map` for analysis.similarity's matrices: its n-th call's pairs run as pieces (side by side on
    a Ray cluster, one thread each: a pair's value must not depend on where it ran), reporting progress
    over spans[n]; each activation matrix is sent to the workers once, by reference."""
    shared: dict[int, object] = {}
    calls = iter(spans)

    def ref(t):
        if id(t) not in shared:
            shared[id(t)] = ctx.share(t)
        return shared[id(t)]

    def run(fn, items: list[tuple]) -> list:
        label, lo, hi = next(calls)
        return ctx.map(
            score_piece,
            [(metric, ref(x), ref(y)) for metric, x, y in items],
            f"{label}: {len(items)} pairs",
            lo,
            hi,
            resources=Resources(cpus=1, threads=1),
        )

    return run


def _matrix(
    metric: str, xs: dict, ys: dict, notes: list[str], ctx: JobContext, label: str, lo: float = 0.0, hi: float = 1.0
) -> np.ndarray:
    """metric(xs[i], ys[j]) for every pair: each pair a piece (side by side on a Ray cluster), each
    activation matrix sent to the workers once, by reference."""
    refs_x = {k: ctx.share(v) for k, v in xs.items()}
    refs_y = refs_x if ys is xs else {k: ctx.share(v) for k, v in ys.items()}
    cells = [(i, j) for i in range(len(xs)) for j in range(len(ys))]
    kx, ky = list(xs), list(ys)
    # one thread per pair on either runner: the metrics' sums over examples split by thread, and a
    # pair's value must not depend on where it ran
    scores = ctx.map(
        score_piece,
        [(metric, refs_x[kx[i]], refs_y[ky[j]]) for i, j in cells],
        f"{label}: {len(cells)} pairs",
        lo,
        hi,
        resources=Resources(cpus=1, threads=1),
    )
    out = np.zeros((len(xs), len(ys)))
    for (i, j), (value, note) in zip(cells, scores):
        out[i, j] = value
        _keep(notes, note)
    return out


@dataclass(frozen=True, kw_only=True)
class LayerMatrixConfig:
    a: ModelRef
    b: ModelRef
    layers_a: tuple[str, ...]
    layers_b: tuple[str, ...]
    metric: str = "linear_cka"
    acts: ActSpec = ActSpec()

    def __post_init__(self) -> None:
        if not self.layers_a or not self.layers_b:
            raise InvalidInputError("choose at least one layer of each model")
        _check_metric(self.metric)


@dataclass(frozen=True, kw_only=True)
class SimilarityMatrix:
    values: np.ndarray  # (rows, cols)
    baseline: np.ndarray  # (rows, cols): rows' model vs a random network like the columns' model
    rows: list[str]
    cols: list[str]
    metric: str
    notes: list[str]


def _pair_activations(ctx: JobContext, ra: ModelRef, rb: ModelRef, layers_a, layers_b, spec: ActSpec):
    """(model A, model B, A's activations, B's, and those of a random network shaped like B), all on
    the same examples (A's data set)."""
    a = load_model(ra.run_id, ra.epoch, device=ctx.device)
    b = load_model(rb.run_id, rb.epoch, device=ctx.device)
    x = _data_x(a, spec)
    twin = _random_twin(b, spec.seed, ctx.device)
    return (
        a,
        b,
        extract(a.model, x, layers_a, spec.conv_mode),
        extract(b.model, x, layers_b, spec.conv_mode),
        extract(twin, x, layers_b, spec.conv_mode),
    )


@job_kind("layer_similarity")
def layer_similarity_job(ctx: JobContext, cfg: LayerMatrixConfig) -> SimilarityMatrix:
    a, b, xs, ys, rs = _pair_activations(ctx, cfg.a, cfg.b, cfg.layers_a, cfg.layers_b, cfg.acts)
    notes: list[str] = []
    values = _matrix(cfg.metric, xs, ys, notes, ctx, "models", 0.1, 0.75)
    baseline = _matrix(cfg.metric, xs, rs, notes, ctx, "random baseline", 0.75, 1.0)
    return SimilarityMatrix(
        values=values,
        baseline=baseline,
        rows=[f"{a.name}: {n}" for n in cfg.layers_a],
        cols=[f"{b.name}: {n}" for n in cfg.layers_b],
        metric=cfg.metric,
        notes=notes,
    )


@dataclass(frozen=True, kw_only=True)
class SeedMatrixConfig:
    models: tuple[ModelRef, ...]
    layer: str
    metric: str = "linear_cka"
    acts: ActSpec = ActSpec()

    def __post_init__(self) -> None:
        if len(self.models) < 2:
            raise InvalidInputError(f"compare at least two models; got {len(self.models)}")
        _check_metric(self.metric)


@job_kind("seed_similarity")
def seed_similarity_job(ctx: JobContext, cfg: SeedMatrixConfig) -> SimilarityMatrix:
    lms = [load_model(r.run_id, r.epoch, device=ctx.device) for r in cfg.models]
    res = seed_matrix(
        [lm.model for lm in lms],
        _data_x(lms[0], cfg.acts),
        cfg.layer,
        cfg.metric,
        random_model=_random_twin(lms[0], cfg.acts.seed, ctx.device),
        conv_mode=cfg.acts.conv_mode,
        map=_on_pieces(ctx, [("seeds", 0.1, 0.85), ("random baseline", 0.85, 1.0)]),
    )
    return SimilarityMatrix(
        values=res.values,
        baseline=res.baseline,
        rows=[lm.name for lm in lms],
        cols=[lm.name for lm in lms],
        metric=cfg.metric,
        notes=res.notes,
    )


@dataclass(frozen=True, kw_only=True)
class ConvergenceConfig:
    model: ModelRef
    layers: tuple[str, ...]
    metric: str = "linear_cka"
    acts: ActSpec = ActSpec()

    def __post_init__(self) -> None:
        if not self.layers:
            raise InvalidInputError("choose at least one layer")
        _check_metric(self.metric)


@dataclass(frozen=True, kw_only=True)
class Convergence:
    epochs: list[int]
    layers: list[str]
    values: np.ndarray  # (epochs, layers): each layer at epoch e vs its final state
    baseline: np.ndarray  # (layers,): final state vs a random network
    metric: str
    notes: list[str]


@job_kind("convergence")
def convergence_job(ctx: JobContext, cfg: ConvergenceConfig) -> Convergence:
    final = load_model(cfg.model.run_id, cfg.model.epoch, device=ctx.device)
    epochs = [c["epoch"] for c in final.record["checkpoints"] if c["epoch"] <= final.epoch]
    x = _data_x(final, cfg.acts)
    end = extract(final.model, x, cfg.layers, cfg.acts.conv_mode)
    notes: list[str] = []
    values = np.zeros((len(epochs), len(cfg.layers)))
    model = final.model  # one model; each checkpoint's weights are loaded into it in turn
    states = ((e, s) for e, s in iter_states(cfg.model.run_id) if e in epochs)
    for i, (e, state) in enumerate(states):
        ctx.progress(i / len(epochs), f"epoch {e}")
        model.load_state_dict(state)
        acts = extract(model, x, cfg.layers, cfg.acts.conv_mode)
        values[i] = [_score(cfg.metric, acts[n], end[n], notes) for n in cfg.layers]
    rand = extract(_random_twin(final, cfg.acts.seed, ctx.device), x, cfg.layers, cfg.acts.conv_mode)
    baseline = np.array([_score(cfg.metric, rand[n], end[n], notes) for n in cfg.layers])
    return Convergence(
        epochs=epochs, layers=list(cfg.layers), values=values, baseline=baseline, metric=cfg.metric, notes=notes
    )


@dataclass(frozen=True, kw_only=True)
class PairConfig:
    a: ModelRef
    b: ModelRef
    layer_a: str
    layer_b: str
    acts: ActSpec = ActSpec()

    def __post_init__(self) -> None:
        if not self.layer_a or not self.layer_b:
            raise InvalidInputError("choose a layer of each model")


@dataclass(frozen=True, kw_only=True)
class AllMetrics:
    metrics: list[str]
    values: np.ndarray  # (M,)
    random_network: np.ndarray  # (M,) a vs a random network like b
    shuffled: np.ndarray  # (M,) a vs b with b's examples shuffled
    notes: list[str]


@job_kind("all_metrics")
def all_metrics_job(ctx: JobContext, cfg: PairConfig) -> AllMetrics:
    _, _, xa, xb, xr = _pair_activations(ctx, cfg.a, cfg.b, (cfg.layer_a,), (cfg.layer_b,), cfg.acts)
    xa, xb, xr = xa[cfg.layer_a], xb[cfg.layer_b], xr[cfg.layer_b]
    perm = torch.randperm(len(xb), generator=torch.Generator().manual_seed(cfg.acts.seed))
    notes: list[str] = []
    names = list(METRICS)
    rows = []
    for i, m in enumerate(names):
        ctx.progress(i / len(names), m)
        rows.append([_score(m, xa, y, notes) for y in (xb, xr, xb[perm])])
    v = np.array(rows)
    return AllMetrics(metrics=names, values=v[:, 0], random_network=v[:, 1], shuffled=v[:, 2], notes=notes)


@dataclass(frozen=True, kw_only=True)
class ProjectionJobConfig:
    model: ModelRef
    layer: str
    projection: ProjectionConfig = ProjectionConfig()
    split: str = "test"
    n_examples: int = 2000
    conv_mode: str = "pool"

    def __post_init__(self) -> None:
        ActSpec(split=self.split, n_examples=self.n_examples, conv_mode=self.conv_mode)  # same rules


@dataclass(frozen=True, kw_only=True)
class ProjectionResult:
    projection: Projection
    indices: np.ndarray
    labels: np.ndarray
    predictions: np.ndarray
    noisy: np.ndarray  # (N,) bool: relabelled training examples (the Memorization view's flag)


@job_kind("projection")
def projection_job(ctx: JobContext, cfg: ProjectionJobConfig) -> ProjectionResult:
    lm = load_model(cfg.model.run_id, cfg.model.epoch, device=ctx.device)
    if cfg.split == "train":  # the examples it was trained on: relabelled ones flagged, true labels shown
        prepared = training_data(lm)
        data = prepared.train.head(cfg.n_examples)
        labels = prepared.original_labels[: len(data)]
        mask = prepared.noise_mask
        noisy = mask[: len(data)].numpy() if mask is not None else np.zeros(len(data), dtype=bool)
    else:
        data = load_data(lm.data, "test").head(cfg.n_examples)
        labels, noisy = data.labels, np.zeros(len(data), dtype=bool)
    ev = evaluate(
        lm.model,
        data.images,
        layers=[cfg.layer],
        conv_mode=cfg.conv_mode,
        progress=stage(ctx, 0.0, 0.4, f"activations of {cfg.layer}"),
    )
    acts = ev.activations[cfg.layer]
    ctx.progress(0.4, f"{cfg.projection.method.upper()} of {len(data):,} × {acts.shape[1]}")
    proj = project(acts.numpy(), cfg.projection)
    return ProjectionResult(
        projection=proj,
        indices=np.arange(len(data)),
        labels=labels.numpy(),
        predictions=ev.predictions.numpy(),
        noisy=noisy,
    )
