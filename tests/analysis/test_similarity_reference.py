"""Each similarity metric against an independent NumPy re-implementation written here from the
reference code (google/svcca's cca_core, Kornblith et al.'s demo notebook, Song et al.'s unbiased
HSIC, Nguyen et al.'s efficient_CKA), and invariance to the scale of either input."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lenscape.analysis.similarity import (
    METRICS,
    MinibatchCKA,
    cca,
    debiased_cka,
    linear_cka,
    pwcca,
    rbf_cka,
    rbf_gram,
    svcca,
)


# ------------------------------------------------------------ references (examples as rows)


def ref_cca_rho(x, y, eps=0.0):
    """cca_core.get_cca_similarity: covariances rescaled by their largest entry, +eps·I, pinv,
    matrix square root by eigh, |singular values|."""
    a, b = x.T, y.T
    nx = a.shape[0]
    cov = np.cov(np.concatenate([a, b]))
    sxx, sxy, syy = cov[:nx, :nx], cov[:nx, nx:], cov[nx:, nx:]
    xmax, ymax = np.abs(sxx).max(), np.abs(syy).max()
    sxx, syy, sxy = sxx / xmax, syy / ymax, sxy / np.sqrt(xmax * ymax)

    def inv_sqrt(s):
        w, v = np.linalg.eigh(np.linalg.pinv(s + eps * np.eye(len(s))))
        return v @ np.diag(np.sqrt(np.clip(w, 0, None))) @ v.T

    ix, iy = inv_sqrt(sxx), inv_sqrt(syy)
    u, s, _ = np.linalg.svd(ix @ sxy @ iy)
    return np.abs(s)[: min(len(sxx), len(syy))], u, ix


def ref_pwcca(x, y):
    """Morcos et al.'s formula: canonical variates of the smaller layer, orthonormalized by QR,
    weights αᵢ = Σⱼ |⟨hᵢ, zⱼ⟩| over that layer's (centred) neurons."""
    if x.shape[1] > y.shape[1]:
        x, y = y, x
    rho, u, ix = ref_cca_rho(x, y, eps=1e-10)
    xc = x - x.mean(0)
    h, _ = np.linalg.qr(xc @ ix @ u[:, : len(rho)])  # (n, k) orthonormal variates
    alpha = np.abs(h.T @ xc).sum(1)
    return float((alpha / alpha.sum()) @ rho)


def ref_svcca(x, y, k):
    def top(a):
        ac = a - a.mean(0)
        u, s, _ = np.linalg.svd(ac, full_matrices=False)
        return u[:, :k] * s[:k]

    return float(ref_cca_rho(top(x), top(y), eps=1e-10)[0].mean())


def ref_linear_cka(x, y):  # the demo's feature_space_linear_cka
    x, y = x - x.mean(0), y - y.mean(0)
    return np.linalg.norm(x.T @ y) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


def ref_gram_rbf(x, threshold):  # the demo's gram_rbf
    dots = x @ x.T
    sq = np.diag(dots)
    d2 = -2 * dots + sq[:, None] + sq[None, :]
    return np.exp(-d2 / (2 * threshold**2 * np.median(d2)))


def ref_cka(k, l):
    n = len(k)
    h = np.eye(n) - 1.0 / n
    hsic = lambda a, b: np.trace(a @ h @ b @ h)
    return hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))


def ref_unbiased_hsic(k, l):  # Song et al. 2012, eq. (5)
    n = len(k)
    k, l = k - np.diag(np.diag(k)), l - np.diag(np.diag(l))
    one = np.ones(n)
    return (
        np.trace(k @ l) + (one @ k @ one) * (one @ l @ one) / ((n - 1) * (n - 2)) - 2 / (n - 2) * one @ k @ l @ one
    ) / (n * (n - 3))


def ref_debiased_cka(x, y):
    k, l = x @ x.T, y @ y.T
    return ref_unbiased_hsic(k, l) / np.sqrt(ref_unbiased_hsic(k, k) * ref_unbiased_hsic(l, l))


@pytest.fixture(scope="module")
def xy():
    rng = np.random.default_rng(11)
    x = rng.normal(size=(300, 8)) @ rng.normal(size=(8, 8))
    y = np.hstack([x @ rng.normal(size=(8, 6)), rng.normal(size=(300, 6))]) + 0.7 * rng.normal(size=(300, 12))
    return x, y


# ------------------------------------------------------------ values against the references


def test_cca_and_linear_metrics_match_the_references(xy):
    x, y = xy
    assert cca(x, y) == pytest.approx(ref_cca_rho(x, y)[0].mean(), abs=1e-8)
    assert linear_cka(x, y) == pytest.approx(ref_linear_cka(x, y), abs=1e-10)
    assert debiased_cka(x, y) == pytest.approx(ref_debiased_cka(x, y), abs=1e-10)
    assert rbf_cka(x, y, 0.7) == pytest.approx(ref_cka(ref_gram_rbf(x, 0.7), ref_gram_rbf(y, 0.7)), abs=1e-10)


def test_pwcca_weights_come_from_the_smaller_layer(xy):
    x, y = xy  # x has 8 neurons, y 12
    expected = ref_pwcca(x, y)
    assert pwcca(x, y) == pytest.approx(expected, abs=1e-7)
    assert pwcca(y, x) == pytest.approx(expected, abs=1e-7)
    # weighting by the larger layer instead would give a clearly different value
    rho, u, iy = ref_cca_rho(y, x, eps=1e-10)
    yc = y - y.mean(0)
    h, _ = np.linalg.qr(yc @ iy @ u[:, : len(rho)])
    alpha = np.abs(h.T @ yc).sum(1)
    assert abs(float((alpha / alpha.sum()) @ rho) - expected) > 1e-3
    assert abs(expected - cca(x, y)) > 1e-3  # and it is not the plain mean


def test_svcca_truncates_to_the_variance_rule(xy):
    x, y = xy
    assert svcca(x, y, keep=3) == pytest.approx(ref_svcca(x, y, 3), abs=1e-7)
    assert abs(ref_svcca(x, y, 3) - ref_svcca(x, y, 8)) > 0.02  # truncation matters on this data
    s = np.linalg.svd(x - x.mean(0), compute_uv=False)
    share = np.cumsum(s**2) / np.sum(s**2)
    k = int(np.argmax(share >= 0.9)) + 1  # the fewest directions reaching 90 %
    assert 1 < k < 8
    assert svcca(x, x[:, ::-1], variance=0.9) == pytest.approx(1.0, abs=1e-6)
    kx = k
    sy = np.linalg.svd(y - y.mean(0), compute_uv=False)
    ky = int(np.argmax(np.cumsum(sy**2) / np.sum(sy**2) >= 0.9)) + 1

    def reduce(a, kk):
        ac = a - a.mean(0)
        u, s_, _ = np.linalg.svd(ac, full_matrices=False)
        return u[:, :kk] * s_[:kk]

    assert svcca(x, y, variance=0.9) == pytest.approx(
        ref_cca_rho(reduce(x, kx), reduce(y, ky), 1e-10)[0].mean(), abs=1e-7
    )


def test_rbf_median_is_the_average_of_the_two_middle_values():
    x = torch.tensor([[0.0], [1.0], [3.0], [7.0]], dtype=torch.float64)  # 16 squared distances, even count
    d2 = ((x - x.T) ** 2).numpy()
    expected = np.exp(-d2 / (2 * np.median(d2)))  # np.median averages the 8th and 9th values
    assert np.median(d2) != np.sort(d2.ravel())[7]  # so the lower median would be wrong here
    assert np.allclose(rbf_gram(x).numpy(), expected, atol=1e-15)
    np.random.seed(1337)
    a = np.random.randn(100, 10)
    assert np.allclose(rbf_gram(torch.tensor(a), 0.5).numpy(), ref_gram_rbf(a, 0.5), atol=1e-14)


def test_minibatch_cka_pools_hsic_over_batches_not_cka():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(400, 6))
    # batches of very different signal: pooling the HSIC terms and averaging per-batch CKA disagree
    y = np.vstack([x[:200] + 0.1 * rng.normal(size=(200, 6)), 5 * rng.normal(size=(200, 6))])
    mb = MinibatchCKA()
    xy = xx = yy = 0.0
    per_batch = []
    for i in range(0, 400, 100):
        a, b = x[i : i + 100], y[i : i + 100]
        mb.update(torch.tensor(a), torch.tensor(b))
        k, l = a @ a.T, b @ b.T
        xy, xx, yy = xy + ref_unbiased_hsic(k, l), xx + ref_unbiased_hsic(k, k), yy + ref_unbiased_hsic(l, l)
        per_batch.append(ref_debiased_cka(a, b))
    assert mb.value() == pytest.approx(xy / np.sqrt(xx * yy), abs=1e-10)
    assert abs(mb.value() - np.mean(per_batch)) > 0.02


def test_the_issue_example_no_longer_depends_on_scale():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 64))
    y = x @ rng.normal(size=(64, 48)) + 2 * rng.normal(size=(2000, 48))
    assert pwcca(1e-5 * x, y) == pytest.approx(pwcca(x, y), abs=1e-6)
    assert svcca(1e-6 * x, y) == pytest.approx(svcca(x, y), abs=1e-6)


# ------------------------------------------------------------ scale invariance (property)


@pytest.fixture(scope="module")
def small():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(120, 10))
    y = x @ rng.normal(size=(10, 7)) + rng.normal(size=(120, 7))
    return x, y, {name: fn(x, y) for name, fn in METRICS.items()}


@settings(max_examples=30, deadline=None)
@given(exponent=st.floats(-8, 8), side=st.sampled_from(["x", "y", "both"]), name=st.sampled_from(sorted(METRICS)))
def test_every_metric_is_invariant_to_the_scale_of_either_input(small, exponent, side, name):
    x, y, base = small
    c = 10.0**exponent
    sx, sy = (c * x if side in ("x", "both") else x), (c * y if side in ("y", "both") else y)
    assert METRICS[name](sx, sy) == pytest.approx(base[name], abs=1e-6)


@settings(max_examples=10, deadline=None)
@given(exponent=st.floats(-8, 8))
def test_minibatch_cka_is_invariant_to_scale(small, exponent):
    x, y, _ = small
    values = []
    for c in (1.0, 10.0**exponent):
        mb = MinibatchCKA()
        for i in range(0, 120, 40):
            mb.update(torch.tensor(c * x[i : i + 40]), torch.tensor(y[i : i + 40]))
        values.append(mb.value())
    assert values[1] == pytest.approx(values[0], abs=1e-8)
