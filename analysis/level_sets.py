"""Level Set Traversal (Balasubramanian et al. 2023, "Exploring Geometry of Blind Spots in Vision
Models"; ALGORITHMS.md section 2): walk from a source image toward a target image while the
model's confidence in the source class stays within δ of where it started, and measure the
high-confidence region around the path (the star structure and the triangle).

Images are (N, C, H, W) in [0, 1]; the model normalizes inside and runs in eval mode.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lenscape.analysis.evaluation import Progress, _no_progress, frozen_parameters
from lenscape.errors import InvalidInputError


@dataclass(frozen=True, kw_only=True)
class LSTConfig:
    eta: float = 0.05  # step toward the target (argparse default; the ImageNet run used 1e-2)
    steps: int = 100  # T: exactly this many iterations (the code has no stopping rule)
    delta: float = 0.05  # allowed drop of the source class's confidence below the clean p0
    eps_adv: float = 1 / 255  # bound of the cumulative confidence-raising term
    jitter: float = 4 / 255  # initial uniform jitter of total width `jitter` (±2/255)
    seed: int = 0
    log_every: int = 10  # keep the iterate every this many steps (for the filmstrip)

    def __post_init__(self) -> None:
        if not 0 < self.eta <= 1 or self.steps < 1 or not 0 < self.delta <= 1:
            raise InvalidInputError(f"need 0 < eta <= 1, steps >= 1, 0 < delta <= 1; got {self}")
        if self.eps_adv < 0 or self.jitter < 0 or self.log_every < 1:
            raise InvalidInputError(f"need eps_adv >= 0, jitter >= 0, log_every >= 1; got {self}")


@dataclass(frozen=True, kw_only=True)
class LSTResult:
    output: np.ndarray  # (N, C, H, W) the final iterates
    p0: np.ndarray  # (N,) the clean sources' confidence in their class
    confidence: np.ndarray  # (T + 1, N) the source class's confidence at each iterate
    accepted: np.ndarray  # (T, N) bool: step t was accepted
    dist_l2: np.ndarray  # (T + 1, N) RMS distance to the target (ℓ2 / √D)
    dist_linf: np.ndarray  # (T + 1, N)
    ssim: np.ndarray  # (T + 1, N) SSIM to the target (1 = identical)
    snapshots: np.ndarray  # (S, N, C, H, W) iterates at steps `snapshot_steps`
    snapshot_steps: np.ndarray  # (S,)
    predictions: np.ndarray  # (N,) the model's class for the outputs
    no_gradient: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=bool))  # (T, N) step t had none


def _confidence(model: nn.Module, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.softmax(model(x), dim=1).gather(1, c[:, None])[:, 0]


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """(N,) SSIM (Wang et al. 2004) of image batches x and y (N, C, H, W): a Gaussian window of σ 1.5
    (11 taps, truncated at 3.5σ), K₁ 0.01, K₂ 0.03, population variances, the mean over the "valid"
    positions where the window fits and over channels: skimage's `structural_similarity(...,
    gaussian_weights=True, use_sample_covariance=False)`. Images smaller than 11 pixels get the
    largest window that fits, with σ = radius / 3.5.

    Written here, not taken from torchmetrics, because torchmetrics averages over reflected borders
    (on an 8×8 image, most of the positions), which neither skimage nor the reference code does.

    Args:
        x: (N, C, H, W) images, H and W at least 3.
        y: (N, C, H, W) images to compare with, pair by pair.
        data_range: the span of the pixel values (1.0 for [0, 1] images); sets the constants C₁ and C₂.

    Returns:
        (N,) SSIM per pair: 1 for identical images, lower the less alike their structure.

    Example:
        >>> import torch
        >>> from lenscape.analysis import ssim
        >>> gen = torch.Generator().manual_seed(0)
        >>> x = torch.rand(2, 1, 8, 8, generator=gen)
        >>> noisy = (x + 0.1 * torch.randn(x.shape, generator=gen)).clamp(0, 1)
        >>> ssim(x, x), ssim(x, noisy).round(decimals=2)
        (tensor([1., 1.]), tensor([0.9700, 0.9800]))
    """
    r = min(5, (min(x.shape[-2:]) - 1) // 2)
    if r < 1:
        raise InvalidInputError(f"SSIM needs images of at least 3×3 pixels; got {tuple(x.shape[-2:])}")
    sigma = 1.5 if r == 5 else r / 3.5
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float64) / sigma) ** 2)
    k = (k / k.sum()).to(x.dtype).to(x.device)
    ch = x.shape[1]
    kh, kw = k.view(1, 1, -1, 1).repeat(ch, 1, 1, 1), k.view(1, 1, 1, -1).repeat(ch, 1, 1, 1)

    def blur(z):  # separable Gaussian, valid positions only
        return F.conv2d(F.conv2d(z, kh, groups=ch), kw, groups=ch)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1)


def project_out(v: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """v minus its component along g, per example (flattened): v − (⟨g, v⟩ / ⟨g, g⟩) g; v itself
    where g = 0 (no direction to remove). No absolute ε is added to ⟨g, g⟩: on a saturated model
    ‖g‖² is far below any fixed ε (1e-12 made the projection a no-op there, silently)."""
    gf, vf = g.flatten(1), v.flatten(1)
    gg = (gf * gf).sum(1)
    coef = torch.where(gg > 0, (gf * vf).sum(1) / torch.where(gg > 0, gg, torch.ones_like(gg)), torch.zeros_like(gg))
    return v - coef.view(-1, *[1] * (v.ndim - 1)) * g


def no_gradient(g: torch.Tensor) -> torch.Tensor:
    """(N,) bool: the examples whose gradient is zero or not finite, so the step cannot keep the
    confidence (it moves straight toward the target)."""
    gf = g.flatten(1)
    return ~((gf * gf).sum(1) > 0) | ~torch.isfinite(gf).all(1)


def level_set_traversal(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    target_images: torch.Tensor,
    config: LSTConfig = LSTConfig(),
    progress: Progress = _no_progress,
) -> LSTResult:
    """The update of ALGORITHMS.md section 2, batched over source→target pairs. The sources
    (`images`) must be classified correctly as `labels`; the model's parameters are not changed
    (their gradients are off while it runs, as in the paper's code).

    Args:
        model: the classifier; put in eval mode (and left there).
        images: (N, C, H, W) source images in [0, 1], each classified as its label.
        labels: (N,) the sources' classes: the class whose confidence the walk keeps.
        target_images: (N, C, H, W) the images each source walks toward (same shape as `images`).
        config: step size eta, steps T, the allowed confidence drop delta, the jitter, its seed, ...
        progress: ``progress(fraction, message)``, called after each step.

    Returns:
        An LSTResult: the final iterates (N, C, H, W), the clean confidence p0 (N,), and per step the
        confidence, acceptance, distances and SSIM to the target, snapshots and final predictions.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from lenscape.analysis import level_set_traversal, LSTConfig
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 2)).eval()
        >>> with torch.no_grad():                                  # only pixel 0 decides the class
        ...     net[1].weight.zero_()[:, 0] = torch.tensor([2.0, -2.0])
        ...     _ = net[1].bias.zero_()
        >>> gen = torch.Generator().manual_seed(0)
        >>> images, targets = torch.rand(2, 1, 4, 4, generator=gen), torch.rand(2, 1, 4, 4, generator=gen)
        >>> images[:, 0, 0, 0], targets[:, 0, 0, 0] = 0.9, 0.0     # sources: class 0, p0 = 0.9734; targets: p = 0.5
        >>> labels = torch.zeros(2, dtype=torch.long)
        >>> res = level_set_traversal(net, images, labels, targets, LSTConfig(eta=0.5, steps=10, jitter=0.0))
        >>> res.p0.round(4), bool((res.p0 - res.confidence.min(0) < 0.05).all()), res.predictions.tolist()
        (array([0.9734, 0.9734], dtype=float32), True, [0, 0])
        >>> # every pixel but pixel 0 has reached the target; pixel 0 kept the confidence
        >>> bool(abs(res.output - targets.numpy()).reshape(2, -1)[:, 1:].max() < 0.01), res.output[:, 0, 0, 0].round(2)
        (True, array([0.91, 0.91], dtype=float32))
    """
    with frozen_parameters(model):
        return _traverse(model, images, labels, target_images, config, progress)


def _traverse(model, source, label, target, config, progress) -> LSTResult:
    if source.shape != target.shape:
        raise InvalidInputError(
            f"source and target images differ in shape: {tuple(source.shape)} vs {tuple(target.shape)}"
        )
    model.eval()
    device = next(model.parameters()).device
    xs, xt, c = source.to(device).float(), target.to(device).float(), label.to(device).long()
    try:
        with torch.no_grad():
            pred = model(xs).argmax(1)
    except RuntimeError as e:
        raise InvalidInputError(f"the model does not take images of shape {tuple(xs.shape[1:])}: {e}") from e
    if (pred != c).any():
        bad = torch.nonzero(pred != c).flatten().tolist()
        raise InvalidInputError(
            f"sources {bad} are not classified as their class: level set traversal starts "
            "from a correctly classified image"
        )
    p0 = _confidence(model, xs, c)
    gen = torch.Generator().manual_seed(int(config.seed))
    noise = torch.rand(xs.shape, generator=gen).to(device)
    x = (xs + config.jitter * (noise - 0.5)).clamp(0, 1)
    a = torch.zeros_like(x)
    dims = x[0].numel()
    conf, acc, l2, linf, sim, flat = [_confidence(model, x, c)], [], [], [], [], []
    snaps, snap_steps = [x.clone()], [0]

    def dist(z):
        diff = (z - xt).flatten(1)
        l2.append(diff.norm(dim=1) / dims**0.5)
        linf.append(diff.abs().max(1).values)
        sim.append(ssim(z, xt))

    dist(x)
    for t in range(1, config.steps + 1):
        x_req = x.detach().requires_grad_(True)
        loss = F.cross_entropy(model(x_req), c, reduction="sum")  # per-example gradients of CE(f(x), c)
        (g,) = torch.autograd.grad(loss, x_req)
        with torch.no_grad():
            v_perp = project_out(xt - x, g)
            flat.append(no_gradient(g))
            a = (a + config.eps_adv / 2 * g).clamp(-config.eps_adv, config.eps_adv)
            y = (x + config.eta * v_perp - a).clamp(0, 1)
            p_y = _confidence(model, y, c)
            ok = (p0 - p_y) < config.delta
            x = torch.where(ok.view(-1, *[1] * (x.ndim - 1)), y, x)
            conf.append(torch.where(ok, p_y, conf[-1]))
            acc.append(ok)
            dist(x)
            if t % config.log_every == 0 or t == config.steps:
                snaps.append(x.clone())
                snap_steps.append(t)
        progress(t / config.steps, f"step {t}/{config.steps} · accepted {float(ok.float().mean()):.0%}")
    with torch.no_grad():
        final_pred = model(x).argmax(1)
    cpu = lambda ts: torch.stack(ts).cpu().numpy()  # noqa: E731
    return LSTResult(
        output=x.cpu().numpy(),
        p0=p0.cpu().numpy(),
        confidence=cpu(conf),
        accepted=cpu(acc),
        dist_l2=cpu(l2),
        dist_linf=cpu(linf),
        ssim=cpu(sim),
        snapshots=cpu(snaps),
        snapshot_steps=np.array(snap_steps),
        predictions=final_pred.cpu().numpy(),
        no_gradient=cpu(flat),
    )


def barycentric_grid(step: float = 0.1) -> np.ndarray:
    """(P, 2) weights (t₁, t₂) on the grid of `step` with t₁ + t₂ ≤ 1: 66 points for 0.1."""
    n = int(round(1 / step))
    return np.array([(i * step, j * step) for i in range(n + 1) for j in range(n + 1 - i)])


@dataclass(frozen=True, kw_only=True)
class Triangle:
    weights: np.ndarray  # (P, 2) barycentric (t₁, t₂)
    confidence: np.ndarray  # (P,) p_c at (1 − t₁ − t₂)·x_s + t₁·x̂₁ + t₂·x̂₂
    xy: np.ndarray  # (P, 2) the points in the triangle's true shape (x_s at 0, x̂₁ at (1, 0))
    p_source: float
    mean: float
    fraction_above: dict  # {Δ: share of points with p > p_source − Δ}
    edge_min: float  # min over the two source→output edges of p − p_source
    edge_mean: float = float("nan")  # mean of p over the two source→output edges (the official "edge mean")


def triangle(
    model: nn.Module,
    image: torch.Tensor,
    out1: torch.Tensor,
    out2: torch.Tensor,
    label: int,
    step: float = 0.1,
    deltas: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3),
) -> Triangle:
    """The source-class confidence over the triangle (x_s, x̂₁, x̂₂) of one source `image` and two
    outputs `out1`, `out2` (each (C, H, W)), with Table 2's metrics and the triangle drawn with its
    true geometry.

    Args:
        model: the classifier; put in eval mode (and left there).
        image: (C, H, W) the source image x_s, in [0, 1].
        out1: (C, H, W) the first traversal output x̂₁ (from `level_set_traversal`).
        out2: (C, H, W) the second output x̂₂.
        label: the source's class, whose confidence is mapped.
        step: spacing of the barycentric grid (0.1: 66 points).
        deltas: the Δ of fraction_above, the share of points with confidence above p_source − Δ.

    Returns:
        A Triangle: the grid's weights and confidences (P,), the points' 2-D positions, p_source, the mean,
        fraction_above {Δ: share}, and the minimum and mean over the two edges that leave the source.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from lenscape.analysis import triangle
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 2)).eval()
        >>> with torch.no_grad():                                  # only pixel 0 decides the class
        ...     net[1].weight.zero_()[:, 0] = torch.tensor([2.0, -2.0])
        ...     _ = net[1].bias.zero_()
        >>> gen = torch.Generator().manual_seed(0)
        >>> image, out1, out2 = torch.rand(3, 1, 4, 4, generator=gen)
        >>> image[0, 0, 0] = out1[0, 0, 0] = out2[0, 0, 0] = 0.9
        >>> tri = triangle(net, image, out1, out2, 0, deltas=(0.05,))    # a flat triangle: p_c is the same everywhere
        >>> round(tri.p_source, 4), round(tri.mean, 4), tri.fraction_above, abs(tri.edge_min) < 1e-6
        (0.9734, 0.9734, {0.05: 1.0}, True)
        >>> out2[0, 0, 0] = 0.0                                    # now x̂₂ sits on the decision boundary
        >>> round(triangle(net, image, out1, out2, 0).edge_min, 4)   # p = 0.5 there: 0.5 − 0.9734
        -0.4734
    """
    w = barycentric_grid(step)
    device = next(model.parameters()).device
    xs, x1, x2 = (t.to(device).float() for t in (image, out1, out2))
    t1 = torch.tensor(w[:, 0], dtype=torch.float32, device=device).view(-1, 1, 1, 1)
    t2 = torch.tensor(w[:, 1], dtype=torch.float32, device=device).view(-1, 1, 1, 1)
    points = (1 - t1 - t2) * xs + t1 * x1 + t2 * x2
    c = torch.full((len(w),), int(label), device=device)
    model.eval()
    p = _confidence(model, points, c).cpu().numpy()
    p_src = float(_confidence(model, xs[None], c[:1])[0])
    e1, e2 = (x1 - xs).flatten(), (x2 - xs).flatten()
    r = float(e2.norm() / e1.norm().clamp_min(1e-12))
    cos = float((e1 @ e2) / (e1.norm() * e2.norm()).clamp_min(1e-12))
    theta = float(np.arccos(np.clip(cos, -1, 1)))
    xy = w[:, :1] * np.array([1.0, 0.0]) + w[:, 1:] * np.array([r * np.cos(theta), r * np.sin(theta)])
    on_edges = (w[:, 0] == 0) | (w[:, 1] == 0)
    return Triangle(
        weights=w,
        confidence=p,
        xy=xy,
        p_source=p_src,
        mean=float(p.mean()),
        fraction_above={float(d): float((p > p_src - d).mean()) for d in deltas},
        edge_min=float((p[on_edges] - p_src).min()),
        edge_mean=float(p[on_edges].mean()),
    )
