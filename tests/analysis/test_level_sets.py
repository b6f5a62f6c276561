"""Level Set Traversal (ALGORITHMS.md section 2): the update's guarantees, the projection, the
(1 − η)^T bound, the triangle, and a traversal on a trained digits CNN."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lenscape.analysis.level_sets import LSTConfig, barycentric_grid, level_set_traversal, project_out, ssim, triangle
from lenscape.models.architectures import ArchSpec
from lenscape.models.data import DataSpec, load_data
from lenscape.errors import InvalidInputError
from lenscape.models.training import preset, train_run
from tests.conftest import has_data


@pytest.fixture(scope="module")
def digits_cnn(tmp_path_factory):
    """The digits CNN preset trained for 8 epochs (seconds), loaded from its last checkpoint."""
    from lenscape.models.checkpoints import load_checkpoint
    from lenscape.models.loading import model_from_state

    folder = tmp_path_factory.mktemp("lst") / "run"
    rec = train_run(preset("digits-cnn", epochs=8), folder)
    state, _ = load_checkpoint(folder / rec["checkpoints"][-1]["file"])
    return model_from_state(ArchSpec.from_dict(rec["arch"]), state).eval()


def _pairs(model, n=4):
    """Correctly classified test sources and targets of other classes."""
    test = load_data(DataSpec(name="digits"), "test")
    x, y = test.x(), test.labels
    with torch.no_grad():
        ok = model(x).argmax(1) == y
    idx = torch.nonzero(ok).flatten()
    src = idx[:n]
    tgt = torch.stack([idx[(y[idx] != y[s]).nonzero().flatten()[0]] for s in src])
    return x[src], y[src], x[tgt]


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), scale=st.floats(1e-12, 1e3))
def test_the_projected_direction_is_orthogonal_to_the_gradient(seed, scale):
    g = torch.Generator().manual_seed(seed)
    v, grad = torch.randn(3, 1, 5, 5, generator=g), scale * torch.randn(3, 1, 5, 5, generator=g)
    p = project_out(v, grad)
    inner = (p.flatten(1) * grad.flatten(1)).sum(1)
    assert (inner.abs() <= 1e-5 * p.flatten(1).norm(dim=1) * grad.flatten(1).norm(dim=1) + 1e-9).all()
    # what is removed is along the gradient: v − p is parallel to g
    removed = (v - p).flatten(1)
    cos = (removed * grad.flatten(1)).sum(1).abs() / (removed.norm(dim=1) * grad.flatten(1).norm(dim=1)).clamp_min(
        1e-30
    )
    assert ((cos > 1 - 1e-4) | (removed.norm(dim=1) < 1e-6)).all()


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    size=st.sampled_from([(1, 28, 28), (3, 32, 32), (1, 8, 8), (3, 13, 9), (1, 5, 6)]),
    noise=st.floats(0.0, 1.0),
)
def test_ssim_equals_skimage(seed, size, noise):
    """Against skimage's structural_similarity with the Gaussian window of Wang et al. (σ 1.5 for
    images of 11 pixels or more, the largest window that fits below that)."""
    from skimage.metrics import structural_similarity

    g = torch.Generator().manual_seed(seed)
    x = torch.rand(3, *size, generator=g, dtype=torch.float64)
    y = (x + noise * (torch.rand(3, *size, generator=g, dtype=torch.float64) - 0.5)).clamp(0, 1)
    r = min(5, (min(size[1:]) - 1) // 2)
    sigma = 1.5 if r == 5 else r / 3.5
    ours = ssim(x, y).numpy()
    ref = [
        structural_similarity(
            x[i].numpy(),
            y[i].numpy(),
            data_range=1.0,
            channel_axis=0,
            gaussian_weights=True,
            sigma=sigma,
            use_sample_covariance=False,
        )
        for i in range(3)
    ]
    assert np.allclose(ours, ref, atol=1e-6), (ours, ref)
    assert np.allclose(ssim(x, x).numpy(), 1.0)


def test_accepted_steps_keep_the_confidence_and_rejected_ones_stay_put(digits_cnn):
    xs, ys, xt = _pairs(digits_cnn)
    cfg = LSTConfig(eta=0.2, steps=30, delta=0.05, log_every=1)
    res = level_set_traversal(digits_cnn, xs, ys, xt, cfg)
    conf = res.confidence[1:]
    accepted_conf = conf[res.accepted]
    p0 = np.broadcast_to(res.p0[None], conf.shape)[res.accepted]
    assert (p0 - accepted_conf < cfg.delta).all()  # every accepted iterate is in the level set
    snaps = res.snapshots  # every iterate (log_every=1)
    rejected = ~res.accepted
    for t, i in zip(*np.nonzero(rejected)):
        assert np.array_equal(snaps[t + 1, i], snaps[t, i])
    assert rejected.any() and res.accepted.any()  # both happen with η = 0.2
    assert res.output.min() >= 0 and res.output.max() <= 1
    # confidences reported are the model's at the iterates
    with torch.no_grad():
        p = torch.softmax(digits_cnn(torch.from_numpy(res.output)), 1)[torch.arange(len(ys)), ys].numpy()
    assert np.allclose(p, res.confidence[-1], atol=1e-5)


def test_with_every_step_accepted_the_distance_follows_the_bound(digits_cnn):
    """Each accepted step leaves ‖x − x_t‖ ≥ (1 − η)‖x_prev − x_t‖ (the removed component along the
    gradient only adds to it), with equality when the gradient is orthogonal to the way to the target.
    A linear model that reads one pixel on which source and target agree is that case exactly."""
    from torch import nn

    eta, steps = 0.05, 40
    bound = (1 - eta) ** steps  # 0.129
    lin = nn.Sequential(nn.Flatten(), nn.Linear(16, 2))
    with torch.no_grad():
        lin[1].weight.zero_()
        lin[1].bias.zero_()
        lin[1].weight[:, 0] = torch.tensor([5.0, -5.0])
    g = torch.Generator().manual_seed(0)
    src, tgt = torch.rand(3, 1, 4, 4, generator=g), torch.rand(3, 1, 4, 4, generator=g)
    src[:, :, 0, 0] = tgt[:, :, 0, 0] = 0.9
    cfg = LSTConfig(eta=eta, steps=steps, delta=1.0, eps_adv=0.0, jitter=0.0)
    res = level_set_traversal(lin, src, torch.zeros(3, dtype=torch.long), tgt, cfg)
    assert res.accepted.all()
    assert np.allclose(res.dist_l2[-1] / res.dist_l2[0], bound, rtol=1e-4)

    xs, ys, xt = _pairs(digits_cnn, 2)  # a real model: the bound is a floor
    res = level_set_traversal(digits_cnn, xs, ys, xt, cfg)
    ratio = res.dist_l2[-1] / res.dist_l2[0]
    print("\ndigits CNN distance ratio", ratio, "bound", bound)
    assert res.accepted.all() and (ratio >= bound * (1 - 1e-4)).all() and (ratio < 1).all()


def test_the_triangle_has_66_points_and_its_vertices_are_the_three_images(digits_cnn):
    assert len(barycentric_grid(0.1)) == 66
    xs, ys, xt = _pairs(digits_cnn, 2)
    res = level_set_traversal(digits_cnn, xs[:1].repeat(2, 1, 1, 1), ys[:1].repeat(2), xt, LSTConfig(steps=20))
    out = torch.from_numpy(res.output)
    tri = triangle(digits_cnn, xs[0], out[0], out[1], int(ys[0]))
    with torch.no_grad():
        p = torch.softmax(digits_cnn(torch.stack([xs[0], out[0], out[1]])), 1)[:, int(ys[0])].numpy()
    w = tri.weights
    at = {(0.0, 0.0): 0, (1.0, 0.0): 1, (0.0, 1.0): 2}
    for (a, b), k in at.items():
        i = int(np.flatnonzero(np.isclose(w[:, 0], a) & np.isclose(w[:, 1], b))[0])
        assert tri.confidence[i] == pytest.approx(p[k], abs=1e-5)
    assert tri.p_source == pytest.approx(p[0], abs=1e-6)
    assert np.allclose(tri.xy[np.isclose(w[:, 0], 1)], [[1.0, 0.0]])
    r = float((out[1] - xs[0]).norm() / (out[0] - xs[0]).norm())
    assert np.linalg.norm(tri.xy[np.isclose(w[:, 1], 1)]) == pytest.approx(r, rel=1e-5)
    assert 0 <= tri.fraction_above[0.3] <= 1 and tri.fraction_above[0.0] <= tri.fraction_above[0.3]


def test_a_traversal_on_a_trained_cnn_ends_near_the_target_still_in_the_source_class(digits_cnn):
    xs, ys, xt = _pairs(digits_cnn, 4)
    res = level_set_traversal(digits_cnn, xs, ys, xt, LSTConfig(eta=0.05, steps=100, delta=0.2))
    ratio = res.dist_l2[-1] / res.dist_l2[0]
    print("\nfinal / initial distance to the target", np.round(ratio, 3))
    assert (res.predictions == ys.numpy()).all()
    assert (ratio < 0.5).all()
    # the distances reported are those of the iterates kept: RMS, ℓ∞ and SSIM of the output
    out = torch.from_numpy(res.output)
    diff = (out - xt).flatten(1)
    assert np.allclose(res.dist_l2[-1], diff.norm(dim=1).numpy() / diff.shape[1] ** 0.5, rtol=1e-5)
    assert np.allclose(res.dist_linf[-1], diff.abs().max(1).values.numpy(), rtol=1e-5)
    assert np.allclose(res.ssim[-1], ssim(out, xt).numpy(), atol=1e-6)
    assert (res.ssim[-1] > res.ssim[0]).all()
    # the walk leaves the model as it was: weights untouched, gradients still on, none accumulated
    assert all(p.requires_grad and p.grad is None for p in digits_cnn.parameters())


@pytest.mark.skipif(not has_data("mnist"), reason="MNIST is not in LENSCAPE_DATA")
@pytest.mark.paper  # trains a CNN on 10,000 MNIST images (about 20 s): the digits CNN above is the suite's
def test_on_mnist_a_small_cnn_walks_much_closer_to_the_target_in_the_source_class(tmp_path):
    """ALGORITHMS.md section 2, at MNIST scale: a small CNN (10 000 images, 2 epochs), the argparse
    defaults (η 0.05, T 100, δ 0.05). Measured: final / initial RMS distance 0.36-0.55, the outputs
    still classified as the source class with p(c) within δ of p0."""
    from lenscape.models.checkpoints import load_checkpoint
    from lenscape.models.loading import model_from_state

    rec = train_run(preset("mnist-cnn", train_subset=10000, epochs=2), tmp_path / "run")
    state, _ = load_checkpoint(tmp_path / "run" / rec["checkpoints"][-1]["file"])
    model = model_from_state(ArchSpec.from_dict(rec["arch"]), state).eval()
    test = load_data(DataSpec(name="mnist"), "test")
    x, y = test.x(list(range(300))), test.labels[:300]
    with torch.no_grad():
        ok = torch.nonzero(model(x).argmax(1) == y).flatten()
    src = ok[:6]
    tgt = torch.stack([ok[(y[ok] != y[s]).nonzero().flatten()[0]] for s in src])
    res = level_set_traversal(model, x[src], y[src], x[tgt], LSTConfig())
    ratio = res.dist_l2[-1] / res.dist_l2[0]
    print("\nMNIST CNN: final / initial RMS distance", np.round(ratio, 3), "SSIM", np.round(res.ssim[-1], 3))
    assert (res.predictions == y[src].numpy()).all()
    assert (res.p0 - res.confidence[-1] < 0.05).all()
    assert np.median(ratio) < 0.6 and (ratio < 0.8).all()
    assert (res.ssim[-1] > res.ssim[0] + 0.2).all()


def test_bad_input_is_refused_with_a_reason(digits_cnn):
    xs, ys, xt = _pairs(digits_cnn, 2)
    wrong = (ys + 1) % 10
    with pytest.raises(InvalidInputError, match=r"sources \[0, 1\] are not classified as their class"):
        level_set_traversal(digits_cnn, xs, wrong, xt)
    assert all(p.requires_grad for p in digits_cnn.parameters())  # restored after the error too
    with pytest.raises(InvalidInputError, match="differ in shape"):
        level_set_traversal(digits_cnn, xs, ys, xt[:, :, :4])
    big = torch.nn.functional.interpolate(xs, size=(28, 28))  # MNIST-sized images for an 8×8 model
    with pytest.raises(InvalidInputError, match=r"does not take images of shape \(1, 28, 28\)"):
        level_set_traversal(digits_cnn, big, ys, big.flip(0))
    with pytest.raises(InvalidInputError):
        LSTConfig(eta=0.0)


def _reference_traversal(model, xs, c, xt, cfg):
    """ALGORITHMS.md section 2's pseudo-code, line by line, one example at a time."""
    outs, accs = [], []
    gen = torch.Generator().manual_seed(cfg.seed)
    noise = torch.rand(xs.shape, generator=gen)
    for i in range(len(xs)):
        p0 = torch.softmax(model(xs[i : i + 1]), 1)[0, c[i]].item()
        x = (xs[i] + cfg.jitter * (noise[i] - 0.5)).clamp(0, 1)
        a = torch.zeros_like(x)
        acc = []
        for _ in range(cfg.steps):
            xr = x.clone().requires_grad_(True)
            loss = torch.nn.functional.cross_entropy(model(xr[None]), c[i : i + 1])
            (g,) = torch.autograd.grad(loss, xr)
            v = xt[i] - x
            gg = torch.sum(g * g)  # the exact projection; only g = 0 is guarded (issue 22, 8)
            v_perp = v - (torch.sum(g * v) / gg) * g if gg > 0 else v
            a = torch.clamp(a + (cfg.eps_adv / 2) * g, -cfg.eps_adv, cfg.eps_adv)
            y = torch.clamp(x + cfg.eta * v_perp - a, 0, 1)
            ok = (p0 - torch.softmax(model(y[None]), 1)[0, c[i]].item()) < cfg.delta
            x = y.detach() if ok else x
            acc.append(ok)
        outs.append(x)
        accs.append(acc)
    return torch.stack(outs), np.array(accs).T


def test_the_batched_walk_equals_the_pseudo_code_run_one_example_at_a_time(digits_cnn):
    """A large ε_adv (the confidence-raising term matters), jitter, and a δ that refuses some steps."""
    xs, ys, xt = _pairs(digits_cnn, 3)
    cfg = LSTConfig(eta=0.15, steps=12, delta=0.02, eps_adv=20 / 255, jitter=16 / 255, seed=5, log_every=4)
    res = level_set_traversal(digits_cnn, xs, ys, xt, cfg)
    ref_out, ref_acc = _reference_traversal(digits_cnn, xs, ys, xt, cfg)
    assert np.array_equal(res.accepted, ref_acc)
    assert np.allclose(res.output, ref_out.detach().numpy(), atol=1e-5)
    assert list(res.snapshot_steps) == [0, 4, 8, 12] and np.allclose(res.snapshots[-1], res.output)
    start = res.snapshots[0] - xs.numpy()  # the jitter: within ±jitter/2, clipped
    inside = (xs.numpy() > cfg.jitter) & (xs.numpy() < 1 - cfg.jitter)
    assert np.abs(start).max() <= cfg.jitter / 2 + 1e-6 and np.abs(start[inside]).max() > cfg.jitter / 2 * 0.9
    assert abs(start[inside].mean()) < cfg.jitter / 20


def test_the_walk_is_seeded_and_reports_its_progress(digits_cnn):
    xs, ys, xt = _pairs(digits_cnn, 2)
    seen = []
    cfg = LSTConfig(steps=5, jitter=8 / 255, seed=1)
    a = level_set_traversal(digits_cnn, xs, ys, xt, cfg, progress=lambda f, m: seen.append(f))
    b = level_set_traversal(digits_cnn, xs, ys, xt, cfg)
    c = level_set_traversal(digits_cnn, xs, ys, xt, LSTConfig(steps=5, jitter=8 / 255, seed=2))
    assert np.array_equal(a.output, b.output) and not np.array_equal(a.output, c.output)
    assert seen == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])


def test_triangle_points_geometry_and_metrics_against_a_direct_computation():
    """A linear model with unsaturated confidences: every grid point's p(c) against the model run on
    (1 − t₁ − t₂)·x_s + t₁·x̂₁ + t₂·x̂₂ built here; the metrics against NumPy; and a hand-worked shape:
    x̂₁ − x_s = e₁ and x̂₂ − x_s = 2(cos 60° e₁ + sin 60° e₂) put x̂₂ at (1, √3)."""
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    xs = torch.tensor([0.2, 0.3, 0.4, 0.5]).view(1, 2, 2)
    e1 = torch.tensor([1.0, 0, 0, 0]).view(1, 2, 2)
    e2 = torch.tensor([0, 1.0, 0, 0]).view(1, 2, 2)
    x1, x2 = xs + e1, xs + 2 * (0.5 * e1 + 3**0.5 / 2 * e2)
    tri = triangle(model, xs, x1, x2, label=1)
    w = tri.weights
    pts = torch.stack([(1 - a - b) * xs + a * x1 + b * x2 for a, b in w])
    with torch.no_grad():
        p = torch.softmax(model(pts), 1)[:, 1].numpy()
    assert np.allclose(tri.confidence, p, atol=1e-6)
    assert 0.05 < p.min() and p.max() < 0.95  # not saturated: the check has teeth
    assert np.allclose(tri.xy[np.isclose(w[:, 1], 1)], [[1.0, 3**0.5]], atol=1e-5)
    mid = np.isclose(w[:, 0], 0.5) & np.isclose(w[:, 1], 0.5)
    assert np.allclose(tri.xy[mid], [[1.0, 3**0.5 / 2]], atol=1e-5)
    assert tri.mean == pytest.approx(p.mean(), abs=1e-6)
    for d, share in tri.fraction_above.items():
        assert share == pytest.approx(np.mean(p > tri.p_source - d))
    edges = np.isclose(w[:, 0], 0) | np.isclose(w[:, 1], 0)
    assert edges.sum() == 21
    assert tri.edge_min == pytest.approx((p[edges] - tri.p_source).min(), abs=1e-6)
    assert tri.edge_mean == pytest.approx(p[edges].mean(), abs=1e-6)  # the official "edge mean"
    assert tri.edge_mean != pytest.approx(tri.mean, abs=1e-4)  # not the whole triangle's
    # an obtuse triangle: x̂₂ behind the source (cos θ < 0)
    back = triangle(model, xs, x1, xs - 0.5 * e1 + 0.5 * e2, label=1)
    corner = back.xy[np.isclose(back.weights[:, 1], 1)][0]
    assert corner == pytest.approx([-0.5, 0.5], abs=1e-5)


def test_ssim_follows_the_data_range():
    from skimage.metrics import structural_similarity

    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 1, 16, 16, generator=g, dtype=torch.float64) * 255
    y = (x + 60 * torch.randn(2, 1, 16, 16, generator=g, dtype=torch.float64)).clamp(0, 255)
    ref = [
        structural_similarity(
            x[i, 0].numpy(),
            y[i, 0].numpy(),
            data_range=255,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
        )
        for i in range(2)
    ]
    assert np.allclose(ssim(x, y, data_range=255).numpy(), ref, atol=1e-6)
    with pytest.raises(InvalidInputError, match="at least 3"):
        ssim(x[..., :2, :2], y[..., :2, :2])


def test_a_saturated_model_is_still_projected_and_a_step_without_gradient_is_flagged(digits_cnn):
    """Issue 22, 8: an absolute ε = 1e-12 on ‖g‖² made the projection a no-op where ‖g‖² ≪ 1e-12, and
    the walk silently became straight interpolation."""
    import copy

    xs, ys, xt = _pairs(digits_cnn, 2)
    hot = copy.deepcopy(digits_cnn)
    last = [m for m in hot.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.mul_(3.0)
        last.bias.mul_(3.0)
    xr = xs.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(torch.nn.functional.cross_entropy(hot(xr), ys, reduction="sum"), xr)
    small = (g.flatten(1) ** 2).sum(1)
    v = xt - xs
    p = project_out(v, g)
    inner = (p.flatten(1) * g.flatten(1)).sum(1).abs() / (p.flatten(1).norm(dim=1) * g.flatten(1).norm(dim=1))
    assert (inner < 1e-3).all()  # the component along g is gone
    swallowed = (small > 0) & (small < 1e-12)  # where the old ε swallowed ‖g‖²
    assert swallowed.any(), small  # (×3 puts ‖g‖² near 1e-20 here)
    assert not torch.allclose(p[swallowed], v[swallowed])  # ... and the projection acts anyway
    with torch.no_grad():  # a classifier so hot that p_c is 1.0
        last.weight.mul_(1e4)
        last.bias.mul_(1e4)
    res = level_set_traversal(hot, xs, ys, xt, LSTConfig(steps=3, jitter=0.0))
    assert res.no_gradient.shape == (3, len(xs)) and res.no_gradient.any()
