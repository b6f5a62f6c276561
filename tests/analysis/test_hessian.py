"""Hessian eigenvalues by Lanczos (issue 22, points 1-3), against a dense float64 Hessian of a tiny
model computed here with torch.func, and numpy's eigendecomposition of it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from lenscape.analysis.hessian import hessian_extremes, hessian_top_eigenvalues, lanczos

torch.manual_seed(0)
X, Y = torch.randn(64, 4), torch.randint(0, 3, (64,))


def _mlp(seed: int = 0, bn: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    layers = [nn.Linear(4, 6)] + ([nn.BatchNorm1d(6)] if bn else []) + [nn.Tanh(), nn.Linear(6, 3)]
    return nn.Sequential(*layers)


def _loss(model: nn.Module, scale: float = 1.0) -> torch.Tensor:
    return scale * nn.functional.cross_entropy(model(X), Y)


def _dense(model: nn.Module, scale: float = 1.0, weights_only: bool = False) -> np.ndarray:
    """Eigenvalues (ascending) of the float64 Hessian, eval mode, over all (or 2+-dim) parameters."""
    return np.linalg.eigvalsh(_dense_matrix(model, scale, weights_only))


def _copy(model):
    import copy

    return copy.deepcopy(model)


def test_the_defaults_give_the_top_three_and_lambda_min_of_a_tiny_mlp():
    model = _mlp()
    dense = _dense(model)
    assert dense[0] < 0 < dense[-1]  # an indefinite Hessian
    by_magnitude = dense[np.argsort(-np.abs(dense))][:3]
    top = hessian_top_eigenvalues(model, _loss, k=3)  # the job's own defaults otherwise
    assert top.converged.all()
    assert np.allclose(top.values, by_magnitude, atol=1e-3)
    lmax, lmin = hessian_extremes(model, _loss)
    assert lmax == pytest.approx(dense[-1], abs=1e-3)
    assert lmin == pytest.approx(dense[0], rel=0.05)


def test_tiny_eigenvalues_are_found_not_stopped_on_the_first_step():
    """A loss near zero (eigenvalues ~1e-7): the power iteration's rule stopped on its first step."""
    model = _mlp(seed=1)
    scale = 1e-7
    dense = _dense(model, scale)
    top = hessian_top_eigenvalues(model, lambda m: _loss(m, scale), k=1, restarts=2)
    assert top.converged.all()
    assert top.values[:, 0] == pytest.approx([dense[np.argmax(np.abs(dense))]] * 2, rel=1e-3)
    assert (top.iterations > 1).all()


def test_weights_only_is_the_hessian_of_the_2d_tensors():
    model = _mlp(seed=2)
    dense = _dense(model, weights_only=True)
    spec = lanczos(model, _loss, k=2, which="LA", params="weights")
    assert np.allclose(spec.values, dense[::-1][:2], atol=1e-4)
    assert not np.allclose(spec.values, _dense(model)[::-1][:2], atol=1e-4)  # not the same as "all"


def test_a_batchnorm_model_in_train_mode_is_left_exactly_as_it_was():
    model = _mlp(seed=3, bn=True).train()
    model(X)  # some running statistics
    before = {k: v.clone() for k, v in model.state_dict().items()}
    top = hessian_top_eigenvalues(model, _loss, k=2, restarts=1)
    hessian_extremes(model, _loss)
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # num_batches_tracked too
    assert np.allclose(top.values[0], _dense(model)[np.argsort(-np.abs(_dense(model)))][:2], atol=1e-3)


def test_a_search_that_runs_out_of_iterations_says_so():
    model = _mlp(seed=4)
    spec = lanczos(model, _loss, k=3, which="SA", tol=1e-12, maxiter=1)
    assert not spec.converged


def _dense_matrix(model: nn.Module, scale: float = 1.0, weights_only: bool = False) -> np.ndarray:
    """The float64 Hessian of scale·CE in eval mode, over all (or the 2+-dim) parameters, by torch.func."""
    from torch.func import functional_call, hessian

    m = _copy(model).double().eval()
    params = {n: p.detach() for n, p in m.named_parameters()}
    names = [n for n, p in params.items() if not weights_only or p.dim() >= 2]
    shapes = [params[n].shape for n in names]
    flat = torch.cat([params[n].reshape(-1) for n in names])

    def loss(theta: torch.Tensor) -> torch.Tensor:
        new = {**params, **{n: c.view(s) for n, c, s in zip(names, theta.split([s.numel() for s in shapes]), shapes)}}
        return scale * nn.functional.cross_entropy(functional_call(m, new, (X.double(),)), Y)

    return hessian(loss)(flat).numpy()


def test_hutchinson_is_unbiased_around_the_dense_trace_and_exact_for_a_diagonal_hessian():
    from lenscape.analysis.hessian import hessian_trace

    model = _mlp(seed=5)
    h = _dense_matrix(model)
    est = hessian_trace(model, _loss, samples=400, seed=1)
    assert abs(est.estimate - np.trace(h)) < 4 * est.std_error and est.std_error < 0.2 * abs(np.trace(h)) + 1e-9
    rng = np.random.default_rng(1)
    first = rng.integers(0, 2, h.shape[0]).astype(float) * 2 - 1
    assert est.samples[0] == pytest.approx(first @ h @ first, rel=1e-4)  # each draw is vᵀHv

    class Diagonal(nn.Module):  # vᵀHv = Σ H_ii v_i² = tr(H) exactly
        def __init__(self):
            super().__init__()
            self.theta = nn.Parameter(torch.ones(5))

        def forward(self, x):
            return x

    diag = torch.tensor([3.0, -1.0, 0.5, 2.0, 0.25])
    exact = hessian_trace(Diagonal(), lambda m: 0.5 * (diag * m.theta**2).sum(), samples=5)
    assert exact.estimate == pytest.approx(float(diag.sum())) and exact.std_error == pytest.approx(0.0, abs=1e-9)


def test_slq_is_gauss_quadrature_of_the_start_vector_exact_for_low_degree_moments():
    from lenscape.analysis.hessian import spectral_density, start_vector

    model = _mlp(seed=6)
    h = _dense_matrix(model)
    steps = 6
    dens = spectral_density(model, _loss, steps=steps, runs=2, seed=3)
    assert dens.nodes.shape == (2, steps) and np.allclose(dens.weights.sum(1), 1.0)
    for r in range(2):
        v = start_vector(h.shape[0], 3 + r)
        v = v / np.linalg.norm(v)
        for j in range(2 * steps):  # exact for polynomials of degree < 2·steps
            moment = v @ np.linalg.matrix_power(h, j) @ v
            assert (dens.weights[r] * dens.nodes[r] ** j).sum() == pytest.approx(moment, rel=1e-3, abs=1e-6)
    full = spectral_density(model, _loss, steps=h.shape[0], runs=1, seed=0)  # as many steps as parameters:
    eig = np.linalg.eigvalsh(h)  # the Krylov space holds every distinct eigenvalue (it
    nodes = full.nodes[0][full.weights[0] > 0]  # ends early where eigenvalues repeat, as zeros do here)
    assert np.abs(nodes[:, None] - eig[None]).min(1).max() < 1e-4
    assert nodes.max() == pytest.approx(eig[-1], abs=1e-4) and nodes.min() == pytest.approx(eig[0], abs=1e-4)
    grid = np.linspace(-1, 1, 401)
    assert dens.on(grid, 0.05).sum() * (grid[1] - grid[0]) == pytest.approx(1.0, abs=0.05)


def test_residuals_are_relative_to_the_eigenvalue():
    """A loss scaled ×1e4: the same eigenvectors, eigenvalues ×1e4, and residuals as small as before."""
    model = _mlp(seed=7)
    plain = lanczos(model, _loss, k=2, which="LA")
    big = lanczos(model, lambda m: _loss(m, 1e4), k=2, which="LA")
    assert np.allclose(big.values, 1e4 * plain.values, rtol=1e-4)
    assert plain.converged and big.converged and (big.residuals < 1e-3).all() and (plain.residuals < 1e-3).all()


def test_weights_only_reaches_lanczos_through_the_top_eigenvalues_and_the_extremes():
    """`params` is passed on by the two functions the jobs call, not only by lanczos itself."""
    model = _mlp(seed=2)
    weights, every = _dense(model, weights_only=True), _dense(model)
    top = hessian_top_eigenvalues(model, _loss, k=2, restarts=1, params="weights")
    assert np.allclose(top.values[0], weights[np.argsort(-np.abs(weights))][:2], atol=1e-4)
    lmax, lmin = hessian_extremes(model, _loss, params="weights")
    assert lmax == pytest.approx(weights[-1], abs=1e-4) and lmin == pytest.approx(weights[0], rel=0.05)
    assert abs(lmax - every[-1]) > 1e-3  # "all" would give another answer


def _wide_mlp() -> nn.Module:
    """325 parameters: more than ARPACK's 20 Lanczos vectors for k=3, so the tolerance decides when it stops."""
    torch.manual_seed(8)
    return nn.Sequential(nn.Linear(4, 40), nn.Tanh(), nn.Linear(40, 3))


def test_the_default_tolerance_gives_small_residuals_and_a_short_budget_is_reported():
    model = _wide_mlp()
    dense = _dense(model)
    top = hessian_top_eigenvalues(model, _loss, k=3, restarts=1)
    assert top.converged.all() and top.residuals.max() < 1e-5
    assert np.allclose(top.values[0], dense[np.argsort(-np.abs(dense))][:3], rtol=1e-5, atol=1e-7)
    # λ_min (ARPACK's "SA") needs more than one restart here: a budget of one leaves it unknown (NaN), not wrong
    lmax, lmin = hessian_extremes(model, _loss, iters=1, tol=1e-12)
    assert lmax == pytest.approx(dense[-1], rel=1e-5) and np.isnan(lmin)
    assert hessian_extremes(model, _loss, iters=1000)[1] == pytest.approx(dense[0], rel=1e-3)


def test_lanczos_refuses_k_of_the_whole_space():
    from lenscape.errors import InvalidInputError

    n = sum(p.numel() for p in _mlp().parameters())
    assert len(lanczos(_mlp(), _loss, k=n - 1, which="LA", maxiter=5000).values) <= n - 1
    with pytest.raises(InvalidInputError, match=f"between 1 and {n - 1}"):
        lanczos(_mlp(), _loss, k=n, which="LA")


def test_residuals_stay_relative_for_tiny_eigenvalues():
    """Scaled ×1e-6 the residuals are as small relative to λ as before (not divided by 1)."""
    model = _mlp(seed=7)
    plain = lanczos(model, _loss, k=2, which="LA")
    small = lanczos(model, lambda m: _loss(m, 1e-6), k=2, which="LA")
    assert np.allclose(small.values, 1e-6 * plain.values, rtol=1e-4)
    assert (np.abs(np.log10(small.residuals) - np.log10(plain.residuals)) < 2).all()


def test_hutchinson_standard_error_and_two_samples():
    from lenscape.analysis.hessian import hessian_trace

    est = hessian_trace(_mlp(seed=5), _loss, samples=2, seed=3)  # two samples are enough for an error
    assert est.std_error == pytest.approx(float(np.std(est.samples, ddof=1) / np.sqrt(2)))


def test_the_smoothed_density_peaks_at_the_eigenvalues():
    from lenscape.analysis.hessian import spectral_density

    class Diagonal(nn.Module):
        def __init__(self):
            super().__init__()
            self.theta = nn.Parameter(torch.ones(3))

    curvature = torch.tensor([4.0, 2.0, 1.0])
    sd = spectral_density(Diagonal(), lambda m: 0.5 * (curvature * m.theta**2).sum(), steps=3)
    grid = np.linspace(-5, 5, 1001)
    dens = sd.on(grid, 0.05)
    peaks = grid[1:-1][(dens[1:-1] > dens[:-2]) & (dens[1:-1] > dens[2:]) & (dens[1:-1] > 0.01)]
    assert np.allclose(peaks, [1.0, 2.0, 4.0], atol=0.01)
