"""Representation similarity: CCA, SVCCA, PWCCA and CKA (linear, RBF, debiased, minibatch).

Every function takes two activation matrices of shape (n_examples, n_features), NumPy arrays or
torch tensors on the CPU or a GPU (the number of features may differ), and returns a float.
Computation is in float64 on the input's device. Formulas follow ALGORITHMS.md section 4:
CKA as in Kornblith et al.'s demo notebook, CCA as google/svcca's cca_core, PWCCA as Morcos et
al.'s formula (translation invariant), SVCCA with the paper's 99 %-of-variance rule.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from lenscape.analysis.evaluation import serial_map
from lenscape.analysis.hooks import conv_to_matrix  # noqa: F401 - public here too
from lenscape.errors import InvalidInputError

Array = np.ndarray | torch.Tensor


def _pair(x: Array, y: Array, check: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Both as float64 matrices on x's device. `check=False` skips the NaN/inf scan (a full pass over
    the data) for callers that check their result instead and call `_check_finite` only then."""
    x, y = _matrix(x, "x", check), _matrix(y, "y", check)
    if x.shape[0] != y.shape[0]:
        raise InvalidInputError(f"x and y must hold the same examples: x has {x.shape[0]} rows, y has {y.shape[0]}")
    return x, y.to(x.device)


def _matrix(a: Array, name: str, check: bool = True) -> torch.Tensor:
    t = torch.as_tensor(np.ascontiguousarray(a) if isinstance(a, np.ndarray) else a)
    if t.ndim != 2:
        raise InvalidInputError(
            f"{name} must be (n_examples, n_features); got shape {tuple(t.shape)} "
            "(flatten or pool convolutional activations first: see conv_to_matrix)"
        )
    if t.shape[0] < 4:
        raise InvalidInputError(f"{name} has {t.shape[0]} examples; similarity needs at least 4")
    t = t.detach().to(torch.float64)
    if check:
        _check_finite(t, name)
    return t


def _check_finite(t: torch.Tensor, name: str) -> None:
    if not torch.isfinite(t).all():
        bad = int((~torch.isfinite(t)).sum())
        raise InvalidInputError(f"{name} holds {bad} NaN or infinite values; similarity is undefined")


def _finite_result(value: float, x: torch.Tensor, y: torch.Tensor) -> float:
    """Non-finite inputs make a non-finite result: only then find out which side was to blame."""
    if not np.isfinite(value):
        _check_finite(x, "x")
        _check_finite(y, "y")
    return value


def _center(t: torch.Tensor) -> torch.Tensor:
    if t.device.type == "cpu":  # NumPy's pass is about twice as fast as torch's here (2 cores, float64)
        a = t.numpy()
        with np.errstate(invalid="ignore", over="ignore"):  # NaN/inf input: the callers check and explain
            return torch.from_numpy(a - a.mean(0))
    return t - t.mean(0, keepdim=True)


def _products(xc: torch.Tensor, yc: torch.Tensor) -> tuple:
    """XcᵀXc, YcᵀYc and XcᵀYc: NumPy arrays on the CPU, where NumPy's BLAS call for AᵀA is a
    symmetric rank-k update (half the work of a general product) and its float64 GEMM beats
    torch's on this kind of machine; torch tensors on a GPU. The d×d work that follows stays in
    the same library (handing work between torch's and NumPy's thread pools costs more than it does)."""
    if xc.device.type == "cpu":
        a, b = xc.numpy(), yc.numpy()
        with np.errstate(invalid="ignore", over="ignore"):
            return a.T @ a, b.T @ b, a.T @ b
    return xc.T @ xc, yc.T @ yc, xc.T @ yc


def _all_finite(a) -> bool:
    return bool(np.isfinite(a).all()) if isinstance(a, np.ndarray) else bool(torch.isfinite(a).all())


# ---------------------------------------------------------------- CKA


def linear_cka(x: Array, y: Array) -> float:
    """‖YcᵀXc‖²_F / (‖XcᵀXc‖_F ‖YcᵀYc‖_F), in feature space (O(n·d₁·d₂)) or, when there are
    more features than examples, through the n×n Gram matrices.

    Args:
        x: (n, d₁) activations of one layer, n >= 4; NumPy array or torch tensor (any device).
        y: (n, d₂) activations of another layer on the same n examples, in the same order.

    Returns:
        Linear CKA in [0, 1]: 1 when y is x up to an orthogonal map, an isotropic scaling and a shift.

    Example:
        >>> import torch
        >>> from lenscape.analysis import linear_cka
        >>> _ = torch.manual_seed(0)
        >>> x = torch.randn(100, 8)
        >>> rotation, _ = torch.linalg.qr(torch.randn(8, 8))
        >>> round(linear_cka(x, x), 4), round(linear_cka(x, 3 * x @ rotation + 1), 4)
        (1.0, 1.0)
        >>> round(linear_cka(x, x @ torch.randn(8, 8)), 4)      # not invariant to any invertible map (CCA is)
        0.6388
    """
    x, y = _pair(x, y, check=False)
    xc, yc = _center(x), _center(y)
    if max(x.shape[1], y.shape[1]) > x.shape[0]:
        return _finite_result(_gram_cka(xc @ xc.T, yc @ yc.T, debiased=False), x, y)
    sxx, syy, sxy = _products(xc, yc)
    norm = np.linalg.norm if isinstance(sxx, np.ndarray) else torch.linalg.norm
    cross, xx, yy = norm(sxy) ** 2, norm(sxx), norm(syy)
    _finite_result(float(cross + xx + yy), x, y)
    if xx * yy <= 0:
        raise InvalidInputError("a representation is constant over these examples: CKA is undefined")
    return float(cross / (xx * yy))


def rbf_gram(x: torch.Tensor, threshold: float = 1.0) -> torch.Tensor:
    """exp(−D² / (2·threshold²·median(D²))), the median over the whole distance matrix (as the demo)."""
    dots = x @ x.T
    sq = dots.diagonal()
    d2 = (sq[:, None] + sq[None, :] - 2 * dots).clamp_min(0)
    return torch.exp(-d2 / (2 * threshold**2 * _median(d2).clamp_min(1e-300)))


def _median(t: torch.Tensor) -> torch.Tensor:
    """NumPy's median: the mean of the two middle values for an even count (torch's is the lower one)."""
    flat = t.flatten()
    n = flat.numel()
    return (flat.kthvalue((n + 1) // 2).values + flat.kthvalue(n // 2 + 1).values) / 2


def rbf_cka(x: Array, y: Array, threshold: float = 1.0) -> float:
    """CKA with Gaussian (RBF) kernels, exp(−D² / (2·threshold²·median(D²))) on each side, D the
    examples' Euclidean distances (Kornblith et al.'s demo notebook): the bandwidth follows the
    median distance, so the value does not depend on the activations' scale.

    Args:
        x: (n, d₁) activations of one layer, n >= 4; NumPy array or torch tensor.
        y: (n, d₂) activations of another layer on the same examples, in the same order.
        threshold: the bandwidth σ = threshold·√median(D²) (1.0, the demo's default); > 0.

    Returns:
        RBF CKA in [0, 1]: 1 when y is x up to an orthogonal map, an isotropic scaling and a shift.

    Example:
        >>> import torch
        >>> from lenscape.analysis import rbf_cka
        >>> _ = torch.manual_seed(0)
        >>> x = torch.randn(100, 8)
        >>> rotation, _ = torch.linalg.qr(torch.randn(8, 8))
        >>> round(rbf_cka(x, x), 4), round(rbf_cka(x, 3 * x @ rotation + 1), 4)
        (1.0, 1.0)
        >>> rbf_cka(x, torch.randn(100, 5)) < 0.2      # unrelated features
        True
    """
    if threshold <= 0:
        raise InvalidInputError(f"threshold must be positive; got {threshold}")
    x, y = _pair(x, y)
    return _gram_cka(rbf_gram(x, threshold), rbf_gram(y, threshold), debiased=False)


def debiased_cka(x: Array, y: Array) -> float:
    """Linear CKA with the unbiased HSIC estimator (Song et al.), ≈ 0 for independent features.

    Args:
        x: (n, d₁) activations of one layer, n >= 4; NumPy array or torch tensor.
        y: (n, d₂) activations of another layer on the same examples, in the same order.

    Returns:
        Debiased CKA: 1 for the same representation, near 0 for independent ones (it can be slightly
        negative), where plain linear CKA is pulled up when there are few examples and many features.

    Example:
        >>> import torch
        >>> from lenscape.analysis import debiased_cka, linear_cka
        >>> _ = torch.manual_seed(0)
        >>> x, y = torch.randn(20, 8), torch.randn(20, 100)      # independent, and only 20 examples
        >>> round(linear_cka(x, y), 4), round(debiased_cka(x, y), 4), round(debiased_cka(x, x), 4)
        (0.5254, 0.022, 1.0)
    """
    x, y = _pair(x, y)
    return _gram_cka(x @ x.T, y @ y.T, debiased=True)


def center_gram(gram: torch.Tensor, unbiased: bool = False) -> torch.Tensor:
    g = gram.clone()
    n = g.shape[0]
    if unbiased:
        g.fill_diagonal_(0)
        means = g.sum(0) / (n - 2)
        means = means - means.sum() / (2 * (n - 1))
        g = g - means[:, None] - means[None, :]
        g.fill_diagonal_(0)
        return g
    means = g.mean(0)
    return g - means[:, None] - means[None, :] + means.mean()


def _gram_cka(k: torch.Tensor, l: torch.Tensor, debiased: bool) -> float:
    kc, lc = center_gram(k, debiased), center_gram(l, debiased)
    denom = kc.norm() * lc.norm()
    if denom <= 0:
        raise InvalidInputError("a representation is constant over these examples: CKA is undefined")
    return float((kc * lc).sum() / denom)


class MinibatchCKA:
    """Streaming debiased linear CKA (Nguyen et al. 2021) between layer lists: accumulates
    ⟨K̃,L̃⟩, ⟨K̃,K̃⟩, ⟨L̃,L̃⟩ per batch, so memory does not grow with the number of examples.
    Batches must all have the same size (the 1/(n(n−3)) factor then cancels); `update` refuses
    others, so drop a partial last batch."""

    def __init__(self) -> None:
        self.batch_size: int | None = None
        self.xy: torch.Tensor | None = None
        self.xx: torch.Tensor | None = None
        self.yy: torch.Tensor | None = None

    def update(self, xs: Array | list[Array] | tuple[Array, ...], ys: Array | list[Array] | tuple[Array, ...]) -> None:
        xs = [xs] if not isinstance(xs, (list, tuple)) else xs
        ys = [ys] if not isinstance(ys, (list, tuple)) else ys
        kx = [center_gram(_gram(a), unbiased=True) for a in xs]
        ly = [center_gram(_gram(b), unbiased=True) for b in ys]
        n = kx[0].shape[0]
        if self.batch_size is None:
            self.batch_size = n
        if n != self.batch_size or any(k.shape[0] != n for k in kx + ly):
            raise InvalidInputError(f"every batch must have {self.batch_size} examples; got {n} (drop partial batches)")
        xy = torch.stack([torch.stack([(k * l).sum() for l in ly]) for k in kx]).cpu()
        xx = torch.stack([(k * k).sum() for k in kx]).cpu()
        yy = torch.stack([(l * l).sum() for l in ly]).cpu()
        self.xy = xy if self.xy is None else self.xy + xy
        self.xx = xx if self.xx is None else self.xx + xx
        self.yy = yy if self.yy is None else self.yy + yy

    def matrix(self) -> np.ndarray:
        if self.xy is None:
            raise InvalidInputError("MinibatchCKA has seen no batches")
        assert self.xx is not None and self.yy is not None  # set together with xy
        return (self.xy / torch.sqrt(self.xx[:, None] * self.yy[None, :]).clamp_min(1e-300)).numpy()

    def value(self) -> float:
        return float(self.matrix()[0, 0])


def _gram(a: Array) -> torch.Tensor:
    t = _matrix(torch.as_tensor(a).flatten(1), "batch")
    return t @ t.T


# ---------------------------------------------------------------- CCA family


def _nonconstant(sq, name: str, eps: float = 1e-10):
    """Mask of the features whose spread (diagonal of XcᵀXc) is not negligible; warns on drops."""
    keep = sq > eps * max(float(sq.max()), 1e-300)
    if not keep.all():
        warnings.warn(f"{name}: dropped {int((~keep).sum())} constant features before CCA", stacklevel=4)
    if not keep.any():
        raise InvalidInputError(f"{name}: every feature is constant over these examples")
    return keep


def _checked_products(x: torch.Tensor, y: torch.Tensor):
    """Centre, form the three products, and only if they are not finite look for the culprit (so
    clean input costs no extra pass over the data)."""
    xc, yc = _center(x), _center(y)
    prods = _products(xc, yc)
    if not all(_all_finite(p) for p in prods):
        _check_finite(x, "x")
        _check_finite(y, "y")
        raise InvalidInputError("activations too large: their products overflow float64; rescale them")
    return prods


def _eigh(a):
    return np.linalg.eigh(a) if isinstance(a, np.ndarray) else torch.linalg.eigh(a)


def _inv_sqrt(cov, eps: float):
    eye = np.eye(len(cov)) if isinstance(cov, np.ndarray) else torch.eye(len(cov), dtype=cov.dtype, device=cov.device)
    vals, vecs = _eigh(cov + eps * eye)
    vals = vals.clip(min=1e-12 * max(float(vals.max()), 1e-300))
    return (vecs * vals**-0.5) @ vecs.T


def canonical_correlations(x: Array, y: Array, epsilon: float = 0.0) -> dict:
    """ρ (decreasing) and the pieces PWCCA needs, all from the covariance matrices (cca_core's
    recipe: centre, whiten with Σ^(-1/2), singular values of Σxx^(-1/2) Σxy Σyy^(-1/2)).
    NumPy arrays on the CPU, torch tensors on a GPU (see `_products`)."""
    x, y = _pair(x, y, check=False)
    sxx, syy, sxy = _checked_products(x, y)
    kx, ky = _nonconstant(sxx.diagonal(), "x"), _nonconstant(syy.diagonal(), "y")
    if not (kx.all() and ky.all()):
        sxx, syy, sxy = sxx[kx][:, kx], syy[ky][:, ky], sxy[kx][:, ky]
    n, d1, d2 = x.shape[0], len(sxx), len(syy)
    if n <= max(d1, d2):
        raise InvalidInputError(
            f"CCA needs more examples than features: n={n}, x has {d1}, y has {d2}; "
            "use SVCCA with keep= or more examples"
        )
    if n < d1 + d2:
        warnings.warn(f"CCA with n={n} < {d1 + d2} features in all: correlations are biased towards 1", stacklevel=2)
    # cca_core's rescaling: each covariance divided by its largest entry, so that ε is relative to
    # the activations' scale and ρ does not depend on it
    xmax, ymax = float(abs(sxx).max()), float(abs(syy).max())
    sxx, syy, sxy = sxx / xmax, syy / ymax, sxy / (xmax * ymax) ** 0.5
    wx, wy = _inv_sqrt(sxx, epsilon), _inv_sqrt(syy, epsilon)
    m = wx @ sxy @ wy
    # ρ² and the left singular vectors of m from the d₁×d₁ eigenproblem of m mᵀ: half the time of
    # an SVD; ρ loses nothing that matters here (absolute error ~1e-8 only for ρ near 0).
    rho2, u = _eigh(m @ m.T)
    top = list(range(d1 - 1, d1 - 1 - min(d1, d2), -1))  # eigh sorts ascending
    return {"rho": rho2[top].clip(0, 1) ** 0.5, "u": u[:, top], "wx": wx, "sxx": sxx}


def cca(x: Array, y: Array, epsilon: float = 0.0) -> float:
    """Mean canonical correlation (over all min(d₁, d₂) directions).

    Args:
        x: (n, d₁) activations of one layer; needs n > max(d₁, d₂) (constant features are dropped).
        y: (n, d₂) activations of another layer on the same examples, in the same order.
        epsilon: ridge added to each covariance (after dividing it by its largest entry) before whitening.

    Returns:
        The mean of the canonical correlations ρ, in [0, 1]: 1 when y is an invertible linear map of x.

    Example:
        >>> import torch
        >>> from lenscape.analysis import cca
        >>> _ = torch.manual_seed(0)
        >>> x = torch.randn(100, 8)
        >>> round(cca(x, x @ torch.randn(8, 8) + 1.0), 4)     # invariant to any invertible linear map and shift
        1.0
        >>> round(cca(x, torch.randn(100, 5)), 4)             # chance level with 100 examples: not 0
        0.2439
    """
    return float(canonical_correlations(x, y, epsilon)["rho"].mean())


def svd_reduce(t: torch.Tensor, variance: float = 0.99, keep: int | None = None) -> torch.Tensor:
    """Project centred activations on their top singular directions: the fewest reaching
    `variance` of Σs² (the paper's rule), or exactly `keep` of them."""
    tc = _center(t)
    u, s, _ = torch.linalg.svd(tc, full_matrices=False)
    if keep is None:
        share = (s**2).cumsum(0) / (s**2).sum().clamp_min(1e-300)
        keep = int((share < variance).sum()) + 1
    keep = max(1, min(int(keep), len(s)))
    return u[:, :keep] * s[:keep]


def svcca(x: Array, y: Array, variance: float = 0.99, keep: int | None = None) -> float:
    """SVCCA (Raghu et al. 2017): each side projected on its top singular directions (the fewest that
    hold `variance` of the variance, or exactly `keep`), then the mean canonical correlation.

    Args:
        x: (n, d₁) activations of one layer, n >= 4; NumPy array or torch tensor.
        y: (n, d₂) activations of another layer on the same examples, in the same order.
        variance: the share of Σs² the kept directions must reach, in (0, 1]; the paper's 0.99 by default.
        keep: keep exactly this many directions on each side instead (None: use `variance`).

    Returns:
        The mean canonical correlation of the two reduced representations, in [0, 1].

    Example:
        >>> import torch
        >>> from lenscape.analysis import svcca
        >>> _ = torch.manual_seed(0)
        >>> signal = torch.randn(100, 3)                          # both layers carry the same 3 directions
        >>> x = signal @ torch.randn(3, 10)
        >>> y = signal @ torch.randn(3, 6) + 0.001 * torch.randn(100, 6)
        >>> round(svcca(x, y), 4), round(svcca(x, torch.randn(100, 6)), 4)
        (1.0, 0.1866)
    """
    if not 0 < variance <= 1:
        raise InvalidInputError(f"variance is a fraction in (0, 1]; got {variance}")
    x, y = _pair(x, y)
    return cca(svd_reduce(x, variance, keep), svd_reduce(y, variance, keep), epsilon=1e-10)


def pwcca(x: Array, y: Array, epsilon: float = 1e-10) -> float:
    """Projection-weighted CCA (Morcos et al.): ρ weighted by how much of the smaller layer's
    (centred) activity each canonical direction accounts for.

    The weights come from the layer with fewer neurons (from x when both have as many).
    Translation invariant, and invariant to any invertible map of the layer that does not supply
    the weights. The weights themselves are tied to the smaller layer's neuron basis (that is the
    method's point), so an invertible map of that layer changes them; permuting or uniformly
    scaling its neurons does not.

    Args:
        x: (n, d₁) activations of one layer; needs n > max(d₁, d₂).
        y: (n, d₂) activations of another layer on the same examples, in the same order.
        epsilon: ridge added to each covariance (after dividing it by its largest entry) before whitening.

    Returns:
        The projection-weighted mean of the canonical correlations, in [0, 1].

    Example:
        >>> import torch
        >>> from lenscape.analysis import pwcca
        >>> _ = torch.manual_seed(0)
        >>> x = torch.randn(100, 8)
        >>> half = torch.cat([x[:, :4], torch.randn(100, 4)], 1)      # shares 4 of x's 8 neurons
        >>> round(pwcca(x, x @ torch.randn(8, 8) + 5.0), 4)           # an invertible map of the other layer
        1.0
        >>> round(pwcca(x, half), 4), round(pwcca(2 * x[:, torch.randperm(8)], half), 4)   # x permuted, scaled
        (0.6024, 0.6024)
    """
    x, y = _pair(x, y, check=False)
    if x.shape[1] > y.shape[1]:
        x, y = y, x  # weights come from the layer with fewer neurons
    res = canonical_correlations(x, y, epsilon)
    # The canonical variates h = Xc Σxx^(-1/2) u / √(n-1) are already orthonormal, so the QR step
    # of the paper's code is not needed and hᵀXc = √(n-1) · uᵀ Σxx^(-1/2) Σxx: the weights come from
    # d×d matrices, without another pass over the n examples.
    alpha = abs(res["u"].T @ res["wx"] @ res["sxx"]).sum(1)  # αᵢ ∝ Σⱼ |⟨hᵢ, zⱼ⟩|
    rho = res["rho"][: len(alpha)]
    return float((alpha / alpha.sum()) @ rho)


METRICS = {
    "linear_cka": linear_cka,
    "rbf_cka": rbf_cka,
    "debiased_cka": debiased_cka,
    "cca": cca,
    "svcca": svcca,
    "pwcca": pwcca,
}


# ---------------------------------------------------------------- matrices over models


def score_pair(metric: str, x: Array, y: Array) -> tuple[float, str | None]:
    """(metric(x, y), None), or (NaN, why not) where the metric is undefined for this pair."""
    if metric not in METRICS:
        raise InvalidInputError(f"unknown metric {metric!r}; choose one of {sorted(METRICS)}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return METRICS[metric](x, y), None
    except InvalidInputError as exc:
        return float("nan"), str(exc)


def pairwise_scores(
    metric: str, xs: Sequence[Array], ys: Sequence[Array], *, map: Callable[[Callable, list[tuple]], list] = serial_map
) -> tuple[np.ndarray, list[str]]:
    """(metric(xs[i], ys[j]) for every pair as an (len(xs), len(ys)) array, the notes on undefined
    pairs). `map(fn, items) == [fn(*item) for item in items]`, computed anywhere (serial by default).

    Args:
        metric: a key of METRICS ("linear_cka", "rbf_cka", "debiased_cka", "cca", "svcca", "pwcca").
        xs: activation matrices (n, dᵢ), all on the same n examples.
        ys: activation matrices (n, dⱼ) on the same examples.
        map: how to compute the cells; ``map(fn, items) == [fn(*item) for item in items]``.

    Returns:
        (scores, notes): a (len(xs), len(ys)) float array, NaN where the metric is undefined for a pair,
        and the distinct reasons why, in the order met.

    Example:
        >>> import torch
        >>> from lenscape.analysis import pairwise_scores
        >>> _ = torch.manual_seed(0)
        >>> x = torch.randn(100, 8)
        >>> scores, notes = pairwise_scores("linear_cka", [x, 2 * x], [x, torch.zeros(100, 3)])
        >>> scores.round(4).tolist(), notes
        ([[1.0, nan], [1.0, nan]], ['a representation is constant over these examples: CKA is undefined'])
    """
    cells = [(i, j) for i in range(len(xs)) for j in range(len(ys))]
    out, notes = np.zeros((len(xs), len(ys))), []
    for (i, j), (value, note) in zip(cells, map(score_pair, [(metric, xs[i], ys[j]) for i, j in cells])):
        out[i, j] = value
        if note and note not in notes:
            notes.append(note)
    return out, notes


@dataclass(frozen=True, kw_only=True)
class SeedMatrix:
    values: np.ndarray  # (models, models)
    baseline: np.ndarray  # (models, models): the larger of the pair's values against a random network
    notes: list[str]


def seed_matrix(
    models: Sequence[nn.Module],
    images: torch.Tensor,
    layer: str,
    metric: str = "linear_cka",
    *,
    random_model: nn.Module | None = None,
    conv_mode: str = "pool",
    map: Callable[[Callable, list[tuple]], list] = serial_map,
) -> SeedMatrix:
    """Similarity of one layer across models (seeds of a recipe: Kornblith et al. 2019, Table 1), on
    the same images, with a random network's value as the chance level.

    Args:
        models: networks that all have a module named `layer`.
        images: (N, C, H, W) in [0, 1] (or uint8).
        metric: one of METRICS ("linear_cka", "rbf_cka", "debiased_cka", "cca", "svcca", "pwcca").
        random_model: an untrained network like models[0]; each model is compared with it and a pair's
            baseline is the larger of its two models' values (a pair beats chance only above it).
        conv_mode: "pool", "flatten" or "positions" for convolutional layers.

    Returns:
        SeedMatrix(values, baseline, notes); baseline is NaN without a random model.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> nets = [nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU()) for _ in range(2)]
        >>> m = seed_matrix(nets, torch.rand(32, 1, 4, 4), "2")
        >>> m.values.shape, round(float(m.values[0, 0]), 6)
        ((2, 2), 1.0)
    """
    from lenscape.analysis.activations import extract

    acts = [extract(m, images, [layer], conv_mode)[layer] for m in models]
    values, notes = pairwise_scores(metric, acts, acts, map=map)
    if random_model is None:
        return SeedMatrix(values=values, baseline=np.full_like(values, np.nan), notes=notes)
    base, more = pairwise_scores(metric, acts, [extract(random_model, images, [layer], conv_mode)[layer]], map=map)
    notes += [n for n in more if n not in notes]
    return SeedMatrix(values=values, baseline=np.maximum(base[:, 0][:, None], base[:, 0][None, :]), notes=notes)
