"""Loss landscapes (Li et al. 2018, "Visualizing the Loss Landscape of Neural Nets"; ALGORITHMS.md
section 5): random directions with filter normalization, 1-D and 2-D surfaces around a model,
interpolation between checkpoints (BatchNorm statistics included), the PCA trajectory of training,
and the top Hessian eigenvalues by Hessian-vector products.

Directions are dicts {parameter name: tensor} over `model.named_parameters()` (the paper's
`dir_type=weights`): BatchNorm running statistics stay at the model's own values on a surface, and
are interpolated with everything else between two checkpoints (`dir_type=states`), as the official
code does. Beyond it, `bn_examples` recomputes them at every point from a fixed subset (a train-mode
pass, then eval: `recompute_bn_statistics`), and both sets of figures are returned. Every function
leaves the model's parameters and buffers bit-identical to what they were.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from lenscape.analysis.evaluation import Progress, _no_progress, evaluate
from lenscape.analysis.hessian import extreme_spectra
from lenscape.errors import InvalidInputError

NORMS = ("filter", "layer", "none")
Direction = dict[str, torch.Tensor]


@dataclass(frozen=True, kw_only=True)
class DirectionConfig:
    norm: str = "filter"  # "filter" (the paper's), "layer", or "none"
    ignore_biasbn: bool = True  # 1-D parameters (biases, BatchNorm γ/β) are zero in the direction
    seed: int = 123  # the paper's code seeds with 123

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise InvalidInputError(f"direction normalization must be one of {NORMS}; got {self.norm!r}")


def random_directions(model: nn.Module, n: int, config: DirectionConfig = DirectionConfig()) -> list[Direction]:
    """`n` Gaussian directions N(0, I) in parameter space, normalized as `config` says:

    - "filter": every slice along dim 0 of a tensor with 2+ dims (a conv filter, a linear layer's row)
      is rescaled to the norm of the same slice of the weights, d_i ← d_i·‖θ_i‖/(‖d_i‖ + 1e-10);
    - "layer": every tensor is rescaled to the norm of its weights;
    - "none": left as drawn.

    1-D parameters are zero with `ignore_biasbn` (the paper's setting); otherwise they are normalized
    as one slice (the official code copies θ into the direction instead, which is not the method).

    Args:
        model: the network at θ*; its ``named_parameters()`` give the directions' keys and norms.
        n: how many directions (1 for a line, 2 for a surface).
        config: the normalization ("filter", "layer" or "none"), ignore_biasbn, and the seed (123, the paper's).

    Returns:
        A list of n dicts {parameter name: tensor shaped, typed and placed like the parameter}; the same
        config gives the same directions.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from lenscape.analysis import random_directions
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        >>> d = random_directions(net, 2)
        >>> len(d), sorted(d[0])
        (2, ['1.bias', '1.weight'])
        >>> # filter normalization: each row of the direction has the norm of the same row of the weights
        >>> torch.allclose(d[0]["1.weight"].norm(dim=1), net[1].weight.norm(dim=1)), bool((d[0]["1.bias"] == 0).all())
        (True, True)
        >>> torch.equal(random_directions(net, 2)[1]["1.weight"], d[1]["1.weight"])   # seeded
        True
    """
    gen = torch.Generator().manual_seed(int(config.seed))
    out = []
    for _ in range(n):
        d: Direction = {}
        for name, p in model.named_parameters():
            w = p.detach()
            r = torch.randn(w.shape, generator=gen, dtype=torch.float32)
            if w.ndim <= 1 and config.ignore_biasbn:
                r = torch.zeros_like(r)
            elif config.norm == "filter" and w.ndim > 1:
                r = _rescale(r.flatten(1), w.float().cpu().flatten(1), dim=1).view_as(r)
            elif config.norm == "layer" or (config.norm == "filter" and w.ndim <= 1):
                r = _rescale(r.reshape(1, -1), w.float().cpu().reshape(1, -1), dim=1).view_as(r)
            d[name] = r.to(device=w.device, dtype=w.dtype)
        out.append(d)
    return out


def _rescale(d: torch.Tensor, w: torch.Tensor, dim: int) -> torch.Tensor:
    return d * (w.norm(dim=dim, keepdim=True) / (d.norm(dim=dim, keepdim=True) + 1e-10))


@contextmanager
def _moved(model: nn.Module):
    """Yields `move(point)` that sets the parameters to θ* + Σ cᵢ·dᵢ; θ* is restored exactly after."""
    params = dict(model.named_parameters())
    origin = {k: p.detach().clone() for k, p in params.items()}

    def move(directions: Sequence[Direction], coefs: Sequence[float]) -> None:
        with torch.no_grad():
            for k, p in params.items():
                p.copy_(origin[k])
                for d, c in zip(directions, coefs):
                    if c:
                        p.add_(d[k], alpha=float(c))

    try:
        yield move
    finally:
        with torch.no_grad():
            for k, p in params.items():
                p.copy_(origin[k])


@dataclass(frozen=True, kw_only=True)
class Surface:
    xs: np.ndarray  # (nx,)
    ys: np.ndarray  # (ny,); [0.0] for a 1-D line
    loss: np.ndarray  # (ny, nx) mean cross-entropy, Plotly's orientation (z[iy, ix])
    accuracy: np.ndarray  # (ny, nx)
    reused: int = 0  # point evaluations taken from earlier grids (each set of figures counts)
    loss_recomputed: np.ndarray | None = None  # (ny, nx) BatchNorm statistics recomputed at each point;
    accuracy_recomputed: np.ndarray | None = None  # None where not asked for


def auto_batch(model: nn.Module) -> int:
    """Examples per forward pass for grid evaluation: small chunks on a CPU, where a 128-image chunk
    of a small CNN stays in cache (about 2x the full-batch pass on 2 cores, measured), large ones
    on a GPU."""
    return 128 if next(model.parameters()).device.type == "cpu" else 1024


def _as_float(images: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    """[0, 1] floats on the model's device, converted once for every grid point."""
    x = images.to(device)
    x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.ndim == 4 else x


@contextmanager
def _fast_layout(model: nn.Module, enabled: bool = True):
    """Convolutional models run in channels_last for the duration (3-4x the NCHW forward of the
    small CNN on 2 CPU cores, measured); the parameters' layout is restored after, their values
    are never changed. Yields whether the layout is on."""
    on = enabled and any(isinstance(m, nn.Conv2d) for m in model.modules())
    if on:
        model.to(memory_format=torch.channels_last)
    try:
        yield on
    finally:
        if on:
            model.to(memory_format=torch.contiguous_format)


def evaluate_points(
    model: nn.Module,
    directions: Sequence[Direction],
    points: np.ndarray,
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int | None = None,
    progress: Progress = _no_progress,
    fast: bool = True,
    bn_examples: torch.Tensor | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(loss, accuracy) at θ* + Σⱼ points[i, j]·dⱼ for each row of `points` (P, len(directions)), in
    eval mode: BatchNorm uses the model's running statistics, or, with `bn_examples`, statistics
    recomputed at each point from those examples (`recompute_bn_statistics`). `batch_size` None picks
    `auto_batch`; `fast=False` is the plain path (NCHW float32, chunks as given): any batch size and
    either path give the same values within float tolerance (relative 1e-5 in the tests)."""
    points = np.asarray(points, dtype=float).reshape(len(points), -1)
    if points.shape[1] != len(directions):
        raise InvalidInputError(f"points have {points.shape[1]} coordinates for {len(directions)} directions")
    loss, acc = np.zeros(len(points)), np.zeros(len(points))
    device = next(model.parameters()).device
    batch_size = batch_size or auto_batch(model)
    with (
        _fast_layout(model, fast) as channels_last,
        _moved(model) as move,
        _kept_batchnorm(model, bn_examples) as layers,
    ):
        x_all, y_all = _as_float(images, device, channels_last), labels.to(device)
        x_bn = None if bn_examples is None else _as_float(bn_examples, device, channels_last)
        for i, coefs in enumerate(points):
            move(directions, coefs)
            if x_bn is not None:
                _recompute(model, layers, x_bn)
            ev = evaluate(model, x_all, y_all, batch_size=batch_size)
            loss[i], acc[i] = ev.loss, ev.accuracy
            progress((i + 1) / len(points), f"point {i + 1}/{len(points)}")
    return loss, acc


def batchnorm_layers(model: nn.Module) -> list[_BatchNorm]:
    """The model's BatchNorm layers that keep running statistics (the ones eval mode reads)."""
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


def recompute_bn_statistics(model: nn.Module, images: torch.Tensor, batch_size: int | None = None) -> None:
    """Set every BatchNorm layer's running statistics to those of the model's current weights on
    `images` (uint8 or [0, 1] floats): a no-grad forward with only the BatchNorm layers in train
    mode (dropout and the rest stay as they are, normally eval), momentum None, then each layer's
    mode and momentum restored. The previous statistics are overwritten.

    With `batch_size` None, one pass over all of `images`: each layer's running_mean and running_var
    are exactly the mean and the unbiased variance (over N·H·W values per channel) of its input,
    where earlier layers normalize with the subset's own statistics as in training, and
    num_batches_tracked is 1. In k chunks (sizes differing by at most 1) they are PyTorch's
    cumulative average for momentum None, the plain average of the k per-chunk values: with equal
    chunks the mean is still the subset's, the variance misses the spread between chunk means. A
    CUDA out-of-memory error doubles the number of chunks and starts again.

    Args:
        model: a network with BatchNorm layers that track running statistics (others are refused);
            changed in place.
        images: (N, C, H, W) uint8 or floats in [0, 1], N >= 2.
        batch_size: None for one pass over all of `images`, else chunks of about this many.

    Returns:
        None; every BatchNorm layer's running_mean, running_var and num_batches_tracked are replaced.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from lenscape.analysis import recompute_bn_statistics
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2))
        >>> images = torch.rand(8, 1, 4, 4)
        >>> recompute_bn_statistics(net, images)
        >>> with torch.no_grad():
        ...     h = net[0](images)                     # what the BatchNorm layer sees
        >>> bn = net[1]
        >>> torch.allclose(bn.running_mean, h.mean((0, 2, 3))), torch.allclose(bn.running_var, h.var((0, 2, 3)))
        (True, True)
        >>> int(bn.num_batches_tracked), net.training  # one pass; the model's mode is as it was
        (1, True)
    """
    layers = _batchnorm_or_refuse(model)
    x = _as_float(images, next(model.parameters()).device, False)
    _recompute(model, layers, x, 1 if batch_size is None else -(-len(x) // batch_size))


def _batchnorm_or_refuse(model: nn.Module) -> list[_BatchNorm]:
    layers = batchnorm_layers(model)
    if not layers:
        raise InvalidInputError(
            f"{type(model).__name__} has no BatchNorm layer with running statistics: there is "
            "nothing to recompute (its eval-mode loss does not depend on any)"
        )
    return layers


def _recompute(model: nn.Module, layers: Sequence[_BatchNorm], x: torch.Tensor, chunks: int = 1) -> None:
    if len(x) < 2:
        raise InvalidInputError(f"recomputing BatchNorm statistics needs at least 2 examples; got {len(x)}")
    while True:
        try:
            return _bn_pass(model, layers, x, chunks)
        except torch.cuda.OutOfMemoryError:
            if chunks >= len(x) // 2:
                raise
            chunks *= 2
            torch.cuda.empty_cache()


@torch.no_grad()
def _bn_pass(model: nn.Module, layers: Sequence[_BatchNorm], x: torch.Tensor, chunks: int) -> None:
    modes = [(m, m.training) for m in model.modules()]
    momenta = [(m, m.momentum) for m in layers]
    model.eval()
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative average: chunk t enters with weight 1/t
        m.train()
    try:
        for chunk in torch.tensor_split(x, min(chunks, len(x) // 2)):  # (B, C, H, W), B >= 2
            model(chunk)
    finally:
        for m, momentum in momenta:
            m.momentum = momentum
        for module, mode in modes:
            module.training = mode


@contextmanager
def _kept_batchnorm(model: nn.Module, bn_examples: torch.Tensor | None):
    """With `bn_examples`, yields the BatchNorm layers (refusing a model without any) and puts their
    buffers (running statistics, num_batches_tracked) back bit for bit afterwards."""
    if bn_examples is None:
        yield []
        return
    layers = _batchnorm_or_refuse(model)
    saved = [(b, b.detach().clone()) for m in layers for b in m.buffers(recurse=False)]
    try:
        yield layers
    finally:
        with torch.no_grad():
            for b, value in saved:
                b.copy_(value)


def grid_points(xs: np.ndarray, ys: np.ndarray | None) -> np.ndarray:
    """(ny·nx, dims) coordinates in the order of Surface.loss.ravel() (z[iy, ix])."""
    if ys is None:
        return np.asarray(xs, dtype=float)[:, None]
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx.ravel(), gy.ravel()], axis=1)


def surface(
    model: nn.Module,
    directions: Sequence[Direction],
    xs: np.ndarray | Sequence[float],
    ys: np.ndarray | Sequence[float] | None,
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int | None = None,
    progress: Progress = _no_progress,
    fast: bool = True,
    bn_examples: torch.Tensor | None = None,
) -> Surface:
    """Loss and accuracy at θ* + x·d₁ (+ y·d₂) on the grid (see evaluate_points). One direction and
    `ys=None` give a line. With `bn_examples`, also the figures with BatchNorm statistics recomputed
    at each point from them (`loss_recomputed`, `accuracy_recomputed`).

    Args:
        model: the network at θ*; moved to each point and restored bit for bit afterwards.
        directions: one or two directions (`random_directions`), {parameter name: tensor}.
        xs: the coefficients along the first direction.
        ys: the coefficients along the second direction, or None for a line (one direction).
        images: (N, C, H, W) uint8 or floats in [0, 1], the examples the loss is measured on.
        labels: (N,) true classes.
        batch_size: examples per forward pass (None: `auto_batch`); bounds memory, not the answer.
        progress: ``progress(fraction, message)``, called after each point.
        fast: channels_last for convolutional models (same values within float tolerance).
        bn_examples: (M, C, H, W) images to recompute BatchNorm's statistics from at each point, or None.

    Returns:
        A Surface: xs, ys ([0.0] for a line), and the mean cross-entropy and accuracy as (len(ys), len(xs))
        arrays (z[iy, ix], Plotly's orientation); also the recomputed-statistics arrays with `bn_examples`.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from lenscape.analysis import surface, random_directions, evaluate
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        >>> images, labels = torch.rand(20, 1, 4, 4), torch.randint(0, 3, (20,))
        >>> before = net[1].weight.clone()
        >>> d = random_directions(net, 2)
        >>> line = surface(net, d[:1], [-1.0, 0.0, 1.0], None, images, labels)
        >>> line.loss.shape, bool(abs(line.loss[0, 1] - evaluate(net, images, labels).loss) < 1e-6)   # 0: θ*
        ((1, 3), True)
        >>> surface(net, d, [-1.0, 0.0, 1.0], [-0.5, 0.5], images, labels).loss.shape   # (ys, xs)
        (2, 3)
        >>> torch.equal(net[1].weight, before)
        True
    """
    if len(directions) not in (1, 2) or (len(directions) == 2) == (ys is None):
        raise InvalidInputError("give one direction and no y values (a line), or two directions and y values")
    xs = np.asarray(xs, dtype=float)
    grid_ys = None if ys is None else np.asarray(ys, dtype=float)
    ys = np.zeros(1) if grid_ys is None else grid_ys
    points, shape = grid_points(xs, grid_ys), (len(ys), len(xs))
    if bn_examples is not None:
        _batchnorm_or_refuse(model)
    sets = [None] if bn_examples is None else [None, bn_examples]
    out = [
        evaluate_points(model, directions, points, images, labels, batch_size, _part(progress, i, len(sets)), fast, bn)
        for i, bn in enumerate(sets)
    ]
    loss, acc = out[0]
    return Surface(
        xs=xs,
        ys=ys,
        loss=loss.reshape(shape),
        accuracy=acc.reshape(shape),
        loss_recomputed=None if bn_examples is None else out[1][0].reshape(shape),
        accuracy_recomputed=None if bn_examples is None else out[1][1].reshape(shape),
    )


def _part(progress: Progress, i: int, n: int) -> Progress:
    """The i-th of n equal stages of `progress`."""
    return lambda f, m: progress((i + f) / n, m)


def interpolate_states(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    """θ(α) = θa + α(θb − θa) for every floating-point entry of two state dicts (BatchNorm running
    statistics included, as the official code); integer entries (num_batches_tracked) are taken from
    the nearer end. Outside [0, 1] a linear running variance goes negative (NaN losses): there the
    standard deviations are extrapolated instead (σa + α(σb − σa), clamped at 0) and squared, which
    meets the linear variance at α = 0 and 1."""
    if a.keys() != b.keys() or any(a[k].shape != b[k].shape for k in a):
        diff = sorted(set(a) ^ set(b)) or [k for k in a if a[k].shape != b[k].shape]
        raise InvalidInputError(f"the two checkpoints are of different architectures (they differ at {diff[:4]})")
    return {k: _between(k, a[k], b[k], alpha) for k in a}


def _between(name: str, a: torch.Tensor, b: torch.Tensor, alpha: float) -> torch.Tensor:
    if not a.is_floating_point():
        return (a if alpha < 0.5 else b).clone()
    if name.endswith("running_var") and not 0.0 <= alpha <= 1.0:
        sa, sb = a.clamp_min(0).sqrt(), b.clamp_min(0).sqrt()
        return (sa + alpha * (sb - sa)).clamp_min(0) ** 2
    return a + alpha * (b - a)


@dataclass(frozen=True, kw_only=True)
class Curve:
    alphas: np.ndarray
    loss: np.ndarray
    accuracy: np.ndarray
    loss_recomputed: np.ndarray | None = None  # BatchNorm statistics recomputed at each α; None where
    accuracy_recomputed: np.ndarray | None = None  # not asked for


def interpolation(
    model: nn.Module,
    a: dict[str, torch.Tensor],
    b: dict[str, torch.Tensor],
    alphas: np.ndarray | Sequence[float],
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int | None = None,
    progress: Progress = _no_progress,
    bn_examples: torch.Tensor | None = None,
) -> Curve:
    """Loss and accuracy along the straight line between two checkpoints' full states, evaluated
    with `model` (an instance of their architecture, restored afterwards); with `bn_examples`, also
    with the BatchNorm statistics recomputed at each α from them (`recompute_bn_statistics`).

    Args:
        model: an instance of the checkpoints' architecture; its state is restored afterwards.
        a: the state dict at α = 0.
        b: the state dict at α = 1 (same keys and shapes as `a`).
        alphas: the points θ(α) = θa + α(θb − θa) to evaluate; values outside [0, 1] extrapolate.
        images: (N, C, H, W) uint8 or floats in [0, 1], the examples the loss is measured on.
        labels: (N,) true classes.
        batch_size: examples per forward pass (None: `auto_batch`); bounds memory, not the answer.
        progress: ``progress(fraction, message)``, called after each α.
        bn_examples: (M, C, H, W) images to recompute BatchNorm's statistics from at each α, or None.

    Returns:
        A Curve: alphas, and the mean cross-entropy and accuracy at each (len(alphas),); also the
        recomputed-statistics arrays with `bn_examples`.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from lenscape.analysis import interpolation, evaluate
        >>> _ = torch.manual_seed(0)
        >>> net_a = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        >>> net_b = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        >>> images, labels = torch.rand(20, 1, 4, 4), torch.randint(0, 3, (20,))
        >>> curve = interpolation(net_a, net_a.state_dict(), net_b.state_dict(), [0.0, 0.5, 1.0], images, labels)
        >>> bool(abs(curve.loss[0] - evaluate(net_a, images, labels).loss) < 1e-6)     # α = 0 is model a
        True
        >>> bool(abs(curve.loss[-1] - evaluate(net_b, images, labels).loss) < 1e-6)    # α = 1 is model b
        True
    """
    alphas = np.asarray(alphas, dtype=float)
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    out = np.zeros((4 if bn_examples is not None else 2, len(alphas)))  # loss, acc[, recomputed loss, acc]
    device = next(model.parameters()).device
    batch_size = batch_size or auto_batch(model)
    layers = [] if bn_examples is None else _batchnorm_or_refuse(model)
    try:
        x_all, y_all = _as_float(images, device, False), labels.to(device)
        x_bn = None if bn_examples is None else _as_float(bn_examples, device, False)
        for i, alpha in enumerate(alphas):
            model.load_state_dict(interpolate_states(a, b, float(alpha)))
            ev = evaluate(model, x_all, y_all, batch_size=batch_size)
            out[:2, i] = ev.loss, ev.accuracy
            if x_bn is not None:
                _recompute(model, layers, x_bn)
                ev = evaluate(model, x_all, y_all, batch_size=batch_size)
                out[2:, i] = ev.loss, ev.accuracy
            progress((i + 1) / len(alphas), f"α = {alpha:.2f}")
    finally:
        model.load_state_dict(saved)
    return Curve(
        alphas=alphas,
        loss=out[0],
        accuracy=out[1],
        loss_recomputed=None if bn_examples is None else out[2],
        accuracy_recomputed=None if bn_examples is None else out[3],
    )


@dataclass(frozen=True, kw_only=True)
class Trajectory:
    directions: list[Direction]  # the two unit principal directions (state-dict entries with 2+ dims)
    coords: np.ndarray  # (E, 2) each checkpoint's ⟨θ_e − θ_final, d⟩
    explained: np.ndarray  # (2,) explained-variance ratio of each axis


def trajectory(states: Sequence[dict[str, torch.Tensor]]) -> Trajectory:
    """PCA of θ_e − θ_final over the checkpoints (the last one is θ_final), over parameters with 2+
    dimensions (biases and BatchNorm entries ignored, as the paper's `ignore=biasbn`).

    Args:
        states: at least 3 state dicts of one run, in training order; the last is θ_final.

    Returns:
        A Trajectory: the two unit principal directions {name: tensor} (the 2+-dimensional entries), each
        checkpoint's coordinates (E, 2) on them (the final one at (0, 0)), and each axis's explained share.

    Example:
        >>> import numpy as np
        >>> import torch
        >>> from torch import nn
        >>> from lenscape.analysis import trajectory
        >>> _ = torch.manual_seed(0)
        >>> final = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).state_dict()
        >>> step = {k: torch.randn(v.shape) for k, v in final.items()}
        >>> states = [{k: final[k] + (4 - e) * step[k] for k in final} for e in range(5)]   # a straight run
        >>> t = trajectory(states)
        >>> t.explained.round(4).tolist(), sorted(t.directions[0]), np.allclose(t.coords[-1], 0)
        ([1.0, 0.0], ['1.weight'], True)
        >>> round(abs(float(t.coords[0, 0])) / float(step["1.weight"].norm()), 4)   # the start: 4 steps away
        4.0
    """
    if len(states) < 3:
        raise InvalidInputError(f"a trajectory needs at least 3 checkpoints; got {len(states)}")
    final = states[-1]
    keys = [k for k, v in final.items() if v.is_floating_point() and v.ndim > 1]
    rows = np.stack([torch.cat([(s[k] - final[k]).double().flatten().cpu() for k in keys]).numpy() for s in states])
    from sklearn.decomposition import PCA  # scikit-learn's PCA: centred, two unit components

    pca = PCA(n_components=2, svd_solver="full").fit(rows)
    comps = pca.components_  # (2, P), unit rows
    coords = rows @ comps.T  # the final row is zero: (0, 0)
    sizes = [final[k].numel() for k in keys]
    directions = []
    for c in comps:
        parts = np.split(c, np.cumsum(sizes)[:-1])
        directions.append(
            {k: torch.from_numpy(p.copy()).view_as(final[k]).to(final[k].dtype) for k, p in zip(keys, parts)}
        )
    return Trajectory(directions=directions, coords=coords, explained=pca.explained_variance_ratio_.copy())


def convexity_map(
    model: nn.Module,
    directions: Sequence[Direction],
    xs: np.ndarray | Sequence[float],
    ys: np.ndarray | Sequence[float],
    loss_at: Callable[[nn.Module], torch.Tensor],
    iters: int = 50,
    seed: int = 0,
    progress: Progress = _no_progress,
    tol: float = 1e-6,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(λ_max, λ_min, |λ_min| / λ_max) on the grid (ny, nx), the model moved to each point and back;
    NaN where Lanczos did not converge within `iters` restarts."""
    xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    lmax, lmin = np.zeros((len(ys), len(xs))), np.zeros((len(ys), len(xs)))
    with _moved(model) as move:
        for iy, y in enumerate(ys):
            for ix, x in enumerate(xs):
                move(directions, (x, y))
                top, bottom = extreme_spectra(model, loss_at, iters, seed, tol)
                # a search that did not converge leaves its point blank (NaN), never a wrong number
                lmax[iy, ix] = top.values[0] if top.converged else np.nan
                lmin[iy, ix] = bottom.values[0] if bottom.converged else np.nan
                done = iy * len(xs) + ix + 1
                progress(done / lmax.size, f"point {done}/{lmax.size}")
    ratio = np.abs(lmin) / np.where(np.abs(lmax) > 0, np.abs(lmax), np.nan)
    return lmax, lmin, ratio
