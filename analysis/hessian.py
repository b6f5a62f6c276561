"""Hessian eigenvalues of a loss with respect to a model's parameters, from Hessian-vector products.

Lanczos (ARPACK's, through `scipy.sparse.linalg.eigsh` on a `LinearOperator`), as the official
loss-landscape code does, not power iteration: shifted power iteration for λ_min converges at a
ratio near 1 − |λ_min|/λ_max (0.998 on a tiny MLP), and a stopping rule on the change of the
estimate stops on the first step whenever the start's Rayleigh quotient is below the tolerance.
Each eigenpair's residual ‖Hv − λv‖ is computed afterwards and reported, with whether ARPACK
converged, so a caller can say when a value is not to be trusted.

The model is evaluated in eval mode (BatchNorm reads its running statistics and never updates
them) and left exactly as it was, mode included."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import nn

from lenscape.errors import InvalidInputError

Params = Literal["all", "weights"]  # "weights": tensors with 2+ dimensions only, as the official code


@contextmanager
def evaluated(model: nn.Module) -> Iterator[None]:
    """`model` in eval mode inside, every module's own mode restored after."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def _hvp_operator(model: nn.Module, loss_fn: Callable[[nn.Module], torch.Tensor], params: Params = "all"):
    """(parameters, v ↦ H·v) for the Hessian of `loss_fn(model)`, reusing one graph of the gradient."""
    if params not in ("all", "weights"):
        raise InvalidInputError(f"params is 'all' or 'weights' (tensors of 2+ dimensions); got {params!r}")
    chosen = [p for p in model.parameters() if p.requires_grad and (params == "all" or p.dim() >= 2)]
    if not chosen:
        raise InvalidInputError("the model has no trainable parameters of that kind")
    grads = torch.autograd.grad(loss_fn(model), chosen, create_graph=True)

    def hvp(v: list[torch.Tensor]) -> list[torch.Tensor]:
        dot = sum((g * x).sum() for g, x in zip(grads, v))
        assert isinstance(dot, torch.Tensor)  # `chosen` is not empty: never sum()'s start value 0
        return [h.detach() for h in torch.autograd.grad(dot, chosen, retain_graph=True)]

    return chosen, hvp


def start_vector(n: int, seed: int) -> np.ndarray:
    """The seeded random start (float64, unnormalized) of a Lanczos process over n parameters."""
    return torch.randn(n, generator=torch.Generator().manual_seed(int(seed)), dtype=torch.float64).numpy()


def _flat_operator(model: nn.Module, loss_fn: Callable[[nn.Module], torch.Tensor], params: Params):
    """(n, x ↦ H·x) on flat float64 vectors (numpy); call inside `evaluated(model)`."""
    chosen, hvp = _hvp_operator(model, loss_fn, params)
    shapes, sizes = [p.shape for p in chosen], [p.numel() for p in chosen]

    def matvec(x: np.ndarray) -> np.ndarray:
        parts = torch.from_numpy(np.asarray(x, dtype=np.float64).ravel()).split(sizes)
        v = [t.view(s).to(p.dtype).to(p.device) for t, s, p in zip(parts, shapes, chosen)]
        return torch.cat([h.reshape(-1).double().cpu() for h in hvp(v)]).numpy()

    return sum(sizes), matvec


@dataclass(frozen=True, kw_only=True)
class Spectrum:
    values: np.ndarray  # (k,) eigenvalues found
    residuals: np.ndarray  # (k,) ‖Hv − λv‖ / max(|λ|, 1e-12)
    products: int  # Hessian-vector products the search used
    converged: bool  # ARPACK converged and every residual is within the tolerance


def lanczos(
    model: nn.Module,
    loss_fn: Callable[[nn.Module], torch.Tensor],
    k: int = 1,
    which: Literal["LM", "LA", "SA"] = "LM",
    tol: float = 1e-6,
    maxiter: int | None = None,
    params: Params = "all",
    seed: int = 0,
) -> Spectrum:
    """The k Hessian eigenvalues of `loss_fn(model)` of largest magnitude ("LM"), largest ("LA") or
    smallest ("SA"), sorted by magnitude (LM) or value (LA descending, SA ascending), by Lanczos from
    a seeded random start. `tol`: ARPACK's relative accuracy, and the residual each pair must meet."""
    from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

    with evaluated(model):
        n, product = _flat_operator(model, loss_fn, params)
        if not 1 <= k < n:
            raise InvalidInputError(f"k must be between 1 and {n - 1} (the number of parameters − 1); got {k}")
        count = [0]

        def matvec(x: np.ndarray) -> np.ndarray:
            count[0] += 1
            return product(x)

        op = LinearOperator((n, n), matvec=matvec, dtype=np.float64)
        v0 = start_vector(n, seed)
        try:
            vals, vecs = eigsh(op, k=k, which=which, tol=tol, maxiter=maxiter, v0=v0)
            done = True
        except ArpackNoConvergence as exc:  # what it has, said to be unconverged
            vals, vecs, done = exc.eigenvalues, exc.eigenvectors, False
        order = {"LM": np.argsort(-np.abs(vals)), "LA": np.argsort(-vals), "SA": np.argsort(vals)}[which]
        vals, vecs = vals[order], vecs[:, order]
        res = np.array(
            [
                np.linalg.norm(product(vecs[:, i]) - vals[i] * vecs[:, i]) / max(abs(vals[i]), 1e-12)
                for i in range(len(vals))
            ]
        )
    # the residual test is looser than ARPACK's own: its tolerance bounds the error of λ, which is
    # about the square of the residual's
    ok = done and len(vals) == k and bool((res <= max(tol, 1e-8) ** 0.5).all())
    return Spectrum(values=vals, residuals=res, products=count[0], converged=ok)


@dataclass(frozen=True, kw_only=True)
class HessianEigs:
    values: np.ndarray  # (restarts, k): the k eigenvalues of largest magnitude, per restart
    iterations: np.ndarray  # (restarts, k) Hessian-vector products used (the same for a restart's k)
    residuals: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # (restarts, k) relative
    converged: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))  # (restarts,)
    trace: HessianTrace | None = None  # Hutchinson's estimate, where asked for
    density: SpectralDensity | None = None  # stochastic Lanczos quadrature, where asked for


def hessian_top_eigenvalues(
    model: nn.Module,
    loss_fn: Callable[[nn.Module], torch.Tensor],
    k: int = 1,
    iters: int = 100,
    restarts: int = 3,
    seed: int = 0,
    tol: float = 1e-6,
    params: Params = "all",
) -> HessianEigs:
    """The k Hessian eigenvalues of largest magnitude of `loss_fn(model)` with respect to the
    parameters, by Lanczos from `restarts` seeded random starts (their spread shows how well it
    converged; `iters` bounds ARPACK's restarts). The model is not changed.

    Args:
        model: the network; evaluated in eval mode, every module's mode restored afterwards.
        loss_fn: ``loss_fn(model) -> scalar tensor``, the loss whose Hessian is meant (a fixed batch, say).
        k: how many eigenvalues, 1 <= k < the number of parameters.
        iters: ARPACK's maxiter (its restarts) per search.
        restarts: independent searches, from start vectors seeded seed·1000 + r.
        seed: seeds the start vectors.
        tol: ARPACK's relative accuracy, and the residual each pair must meet to count as converged.
        params: "all" (default) or "weights" (tensors with 2+ dimensions, as the official code).

    Returns:
        A HessianEigs: values (restarts, k) sorted by magnitude (NaN where a search found fewer), the
        Hessian-vector products used, the relative residuals, and whether each restart converged.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Linear(3, 1, bias=False)
        >>> curvature = torch.tensor([4.0, 2.0, 1.0])
        >>> loss_fn = lambda m: 0.5 * (curvature * m.weight[0] ** 2).sum()     # its Hessian is diag(4, 2, 1)
        >>> from lenscape.analysis import hessian_top_eigenvalues
        >>> eigs = hessian_top_eigenvalues(net, loss_fn, k=2, restarts=2)
        >>> eigs.values.round(4).tolist(), eigs.converged.tolist()
        ([[4.0, 2.0], [4.0, 2.0]], [True, True])
    """
    runs = [lanczos(model, loss_fn, k, "LM", tol, iters, params, seed=int(seed) * 1000 + r) for r in range(restarts)]
    pad = lambda a: np.pad(a, (0, k - len(a)), constant_values=np.nan)  # noqa: E731 - unconverged: fewer
    return HessianEigs(
        values=np.stack([pad(s.values) for s in runs]),
        iterations=np.array([[s.products] * k for s in runs], dtype=int),
        residuals=np.stack([pad(s.residuals) for s in runs]),
        converged=np.array([s.converged for s in runs]),
    )


def hessian_extremes(
    model: nn.Module,
    loss_fn: Callable[[nn.Module], torch.Tensor],
    iters: int = 100,
    seed: int = 0,
    tol: float = 1e-6,
    params: Params = "all",
) -> tuple[float, float]:
    """(λ_max, λ_min) of the Hessian, each by Lanczos (ARPACK's largest and smallest algebraic).
    Li et al. map |λ_min| / λ_max over a plane: near 0, locally convex.

    Args:
        model: the network; evaluated in eval mode, every module's mode restored afterwards.
        loss_fn: ``loss_fn(model) -> scalar tensor``, the loss whose Hessian is meant.
        iters: ARPACK's maxiter (its restarts) per search.
        seed: seeds the start vector (λ_min's search uses seed + 1).
        tol: ARPACK's relative accuracy.
        params: "all" (default) or "weights" (tensors with 2+ dimensions).

    Returns:
        (λ_max, λ_min) as floats; NaN for a search that found nothing (see `extreme_spectra` for convergence).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Linear(3, 1, bias=False)
        >>> curvature = torch.tensor([4.0, 2.0, 1.0])
        >>> loss_fn = lambda m: 0.5 * (curvature * m.weight[0] ** 2).sum()     # its Hessian is diag(4, 2, 1)
        >>> from lenscape.analysis import hessian_extremes
        >>> [round(v, 4) for v in hessian_extremes(net, loss_fn)]
        [4.0, 1.0]
        >>> saddle = lambda m: 0.5 * (torch.tensor([4.0, -2.0, 1.0]) * m.weight[0] ** 2).sum()
        >>> [round(v, 4) for v in hessian_extremes(net, saddle)]     # λ_min < 0: not convex here
        [4.0, -2.0]
    """
    top, bottom = extreme_spectra(model, loss_fn, iters, seed, tol, params)
    first = lambda s: float(s.values[0]) if len(s.values) else float("nan")  # noqa: E731 - none converged
    return first(top), first(bottom)


def extreme_spectra(
    model: nn.Module,
    loss_fn: Callable[[nn.Module], torch.Tensor],
    iters: int = 100,
    seed: int = 0,
    tol: float = 1e-6,
    params: Params = "all",
) -> tuple[Spectrum, Spectrum]:
    """The Lanczos searches for λ_max (largest algebraic) and λ_min (smallest), with their convergence."""
    return (
        lanczos(model, loss_fn, 1, "LA", tol, iters, params, seed),
        lanczos(model, loss_fn, 1, "SA", tol, iters, params, seed + 1),
    )


# ---------------------------------------------------------------------------------------------
# What PyHessian users expect beside the top eigenvalues: the trace and the spectral density


@dataclass(frozen=True, kw_only=True)
class HessianTrace:
    estimate: float  # mean of vᵀHv over Rademacher v (Hutchinson): an unbiased estimate of tr(H)
    std_error: float  # its standard error
    samples: np.ndarray  # (n,) each draw's vᵀHv


def hessian_trace(
    model: nn.Module,
    loss_fn: Callable[[nn.Module], torch.Tensor],
    samples: int = 100,
    seed: int = 0,
    params: Params = "all",
) -> HessianTrace:
    """tr(H) by Hutchinson's estimator, E[vᵀHv] over Rademacher vectors v (PyHessian's `trace`).

    Args:
        model: the network; evaluated in eval mode, every module's mode restored afterwards.
        loss_fn: ``loss_fn(model) -> scalar tensor``, the loss whose Hessian is meant.
        samples: how many vectors v, at least 2 (for the standard error).
        seed: seeds the draws of v (NumPy's default_rng).
        params: "all" (default) or "weights" (tensors with 2+ dimensions).

    Returns:
        A HessianTrace: the estimate (the mean of vᵀHv), its standard error, and each draw's vᵀHv.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Linear(3, 1, bias=False)
        >>> curvature = torch.tensor([4.0, 2.0, 1.0])
        >>> loss_fn = lambda m: 0.5 * (curvature * m.weight[0] ** 2).sum()     # its Hessian is diag(4, 2, 1)
        >>> from lenscape.analysis import hessian_trace
        >>> tr = hessian_trace(net, loss_fn, samples=10)
        >>> round(tr.estimate, 4), round(tr.std_error, 4)      # exact for a diagonal Hessian: vᵢ² = 1
        (7.0, 0.0)
    """
    if samples < 2:
        raise InvalidInputError(f"the trace needs at least 2 samples (for its error); got {samples}")
    gen = np.random.default_rng(int(seed))
    with evaluated(model):
        n, matvec = _flat_operator(model, loss_fn, params)
        draws = np.empty(samples)
        for i in range(samples):
            v = gen.integers(0, 2, n).astype(np.float64) * 2 - 1  # (n,) ±1
            draws[i] = v @ matvec(v)
    return HessianTrace(
        estimate=float(draws.mean()), std_error=float(draws.std(ddof=1) / np.sqrt(samples)), samples=draws
    )


@dataclass(frozen=True, kw_only=True)
class SpectralDensity:
    nodes: np.ndarray  # (runs, m) Ritz values of each run's Lanczos tridiagonal matrix
    weights: np.ndarray  # (runs, m) their Gauss quadrature weights (each run's sum to 1)

    def on(self, grid: np.ndarray, sigma: float) -> np.ndarray:
        """The density on `grid`: every node a Gaussian of width `sigma`, weighted, runs averaged."""
        grid = np.asarray(grid, dtype=float)[:, None, None]
        bumps = np.exp(-0.5 * ((grid - self.nodes) / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))
        return (bumps * self.weights).sum(-1).mean(-1)


def spectral_density(
    model: nn.Module,
    loss_fn: Callable[[nn.Module], torch.Tensor],
    steps: int = 30,
    runs: int = 1,
    seed: int = 0,
    params: Params = "all",
) -> SpectralDensity:
    """The Hessian's eigenvalue density by stochastic Lanczos quadrature (PyHessian's `density`):
    per run, `steps` Lanczos steps with full reorthogonalization from start_vector(n, seed + run);
    the tridiagonal matrix's eigenvalues are the nodes, the squares of their eigenvectors' first
    components the weights (Gauss quadrature of v̂ᵀ f(H) v̂, exact for polynomials of degree < 2·steps).

    Args:
        model: the network; evaluated in eval mode, every module's mode restored afterwards.
        loss_fn: ``loss_fn(model) -> scalar tensor``, the loss whose Hessian is meant.
        steps: Lanczos steps per run (at most the number of parameters): the nodes per run.
        runs: independent runs, averaged by `SpectralDensity.on`.
        seed: run r starts from start_vector(n, seed + r).
        params: "all" (default) or "weights" (tensors with 2+ dimensions).

    Returns:
        A SpectralDensity: nodes and weights (runs, steps) (a run that ended early is padded with weight 0);
        ``.on(grid, sigma)`` gives the smoothed density.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Linear(3, 1, bias=False)
        >>> curvature = torch.tensor([4.0, 2.0, 1.0])
        >>> loss_fn = lambda m: 0.5 * (curvature * m.weight[0] ** 2).sum()     # its Hessian is diag(4, 2, 1)
        >>> from lenscape.analysis import spectral_density
        >>> sd = spectral_density(net, loss_fn, steps=3)           # 3 steps on 3 parameters: the eigenvalues
        >>> sd.nodes.round(4).tolist(), round(float(sd.weights.sum()), 4)
        ([[1.0, 2.0, 4.0]], 1.0)
    """
    with evaluated(model):
        n, matvec = _flat_operator(model, loss_fn, params)
        steps = min(int(steps), n)
        if steps < 1 or runs < 1:
            raise InvalidInputError(f"need steps >= 1 and runs >= 1; got {steps}, {runs}")
        out = [_gauss_quadrature(matvec, start_vector(n, int(seed) + r), steps) for r in range(runs)]
    m = max(len(x) for x, _ in out)
    pad = lambda a, v: np.pad(a, (0, m - len(a)), constant_values=v)  # noqa: E731 - a run that ended early
    return SpectralDensity(
        nodes=np.stack([pad(x, 0.0) for x, _ in out]), weights=np.stack([pad(w, 0.0) for _, w in out])
    )


def _gauss_quadrature(matvec, v0: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray]:
    basis = [v0 / np.linalg.norm(v0)]
    alpha, beta = [], []
    w = matvec(basis[0])
    for j in range(steps):
        alpha.append(float(w @ basis[j]))
        w = w - alpha[j] * basis[j]
        for u in basis:  # full reorthogonalization: float error otherwise
            w = w - (w @ u) * u  # brings back found directions (ghost eigenvalues)
        b = float(np.linalg.norm(w))
        if j == steps - 1 or b < 1e-10 * max(1.0, abs(alpha[j])):
            break
        beta.append(b)
        basis.append(w / b)
        w = matvec(basis[-1]) - b * basis[-2]
    t = np.diag(alpha) + np.diag(beta[: len(alpha) - 1], 1) + np.diag(beta[: len(alpha) - 1], -1)
    nodes, vecs = np.linalg.eigh(t)
    return nodes, vecs[0] ** 2
