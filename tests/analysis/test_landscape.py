"""Loss landscapes (Li et al. 2018, ALGORITHMS.md section 5): known answers written here first."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lenscape.analysis.evaluation import evaluate
from lenscape.analysis.hessian import hessian_top_eigenvalues
from lenscape.analysis.landscape import (
    DirectionConfig,
    interpolate_states,
    interpolation,
    random_directions,
    surface,
    trajectory,
)
from lenscape.models.architectures import ArchSpec, build_model
from lenscape.errors import InvalidInputError

CNN_BN = ArchSpec(
    name="cnn", in_shape=(1, 8, 8), num_classes=3, mean=(0.5,), std=(0.5,), channels=(4, 6), batchnorm=True
)


def _data(n=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, 8, 8), generator=g, dtype=torch.uint8), torch.randint(0, 3, (n,), generator=g)


def _trained(seed=0, steps=30):
    """A BatchNorm CNN after a few SGD steps in train mode (running statistics away from 0/1)."""
    model = build_model(CNN_BN, seed=seed)
    images, labels = _data(seed=seed + 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    for _ in range(steps):
        loss = F.cross_entropy(model(images.float() / 255), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def _snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_centre_of_the_surface_is_the_models_own_loss_and_the_model_is_untouched():
    model, (images, labels) = _trained(), _data()
    before = _snapshot(model)
    dirs = random_directions(model, 2, DirectionConfig(seed=1))
    res = surface(model, dirs, np.linspace(-1, 1, 5), np.linspace(-1, 1, 3), images, labels, batch_size=16)
    assert res.loss.shape == (3, 5) and res.accuracy.shape == (3, 5)
    own = evaluate(model, images, labels)
    assert res.loss[1, 2] == pytest.approx(own.loss, rel=1e-5)
    assert res.accuracy[1, 2] == pytest.approx(own.accuracy)
    assert _same(before, model.state_dict())
    assert not np.allclose(res.loss, res.loss[1, 2])  # it does move away from the centre


def test_filter_normalized_directions_have_the_norm_of_each_filter_and_skip_biases_and_bn():
    model = _trained()
    (d,) = random_directions(model, 1, DirectionConfig(norm="filter", seed=3))
    params = dict(model.named_parameters())
    for name, t in d.items():
        w = params[name]
        if w.ndim <= 1:
            assert torch.count_nonzero(t) == 0, name  # biases and BN γ/β: zero in the direction
        else:
            assert torch.allclose(t.flatten(1).norm(dim=1), w.flatten(1).norm(dim=1), rtol=1e-5), name
    (layer,) = random_directions(model, 1, DirectionConfig(norm="layer", seed=3))
    for name, t in layer.items():
        if params[name].ndim > 1:
            assert t.norm() == pytest.approx(float(params[name].norm()), rel=1e-5)


def test_two_random_directions_are_nearly_orthogonal_gaussians():
    model = build_model(
        ArchSpec(name="mlp", in_shape=(1, 16, 16), num_classes=10, mean=(0.5,), std=(0.5,), widths=(256,)), seed=0
    )
    a, b = random_directions(model, 2, DirectionConfig(norm="none", seed=0))
    va, vb = (torch.cat([t.flatten() for t in d.values()]) for d in (a, b))
    n = va.numel()
    assert abs(float(F.cosine_similarity(va, vb, dim=0))) < 3 / math.sqrt(n)
    weights = torch.cat([t.flatten() for name, t in a.items() if t.ndim > 1])
    assert abs(float(weights.mean())) < 4 / math.sqrt(weights.numel())  # zero mean: Gaussian, not U[0, 1]
    assert float(weights.std()) == pytest.approx(1.0, abs=0.02)
    again, _ = random_directions(model, 2, DirectionConfig(norm="none", seed=0))
    assert all(torch.equal(again[k], a[k]) for k in a)  # seeded


def test_scale_invariance_under_batchnorm_holds_for_filter_normalization_only():
    model, (images, labels) = _trained(), _data()
    scaled = _trained()
    with torch.no_grad():  # conv1 feeds bn1: ×10 with the running statistics
        scaled.conv1.weight.mul_(10)  # scaled alike (eval mode uses them) is the same function
        scaled.conv1.bias.mul_(10)
        scaled.bn1.running_mean.mul_(10)
        scaled.bn1.running_var.mul_(100)
    assert evaluate(scaled, images, labels).loss == pytest.approx(evaluate(model, images, labels).loss, rel=1e-4)
    xs = np.linspace(-0.5, 0.5, 5)

    def line(m, norm):
        (d,) = random_directions(m, 1, DirectionConfig(norm=norm, seed=7))
        return surface(m, [d], xs, None, images, labels).loss[0]

    assert np.allclose(line(model, "filter"), line(scaled, "filter"), rtol=1e-3, atol=1e-5)
    assert not np.allclose(line(model, "none"), line(scaled, "none"), rtol=1e-2)


def test_interpolation_reproduces_both_endpoints_batchnorm_statistics_included():
    a, b, (images, labels) = _trained(seed=0), _trained(seed=5), _data()
    sa, sb = _snapshot(a), _snapshot(b)
    assert not torch.equal(sa["bn1.running_mean"], sb["bn1.running_mean"])
    work = build_model(CNN_BN, seed=9).eval()
    curve = interpolation(work, sa, sb, np.array([0.0, 0.5, 1.0]), images, labels)
    assert curve.loss[0] == pytest.approx(evaluate(a, images, labels).loss, rel=1e-5)
    assert curve.loss[2] == pytest.approx(evaluate(b, images, labels).loss, rel=1e-5)
    mid = interpolate_states(sa, sb, 0.5)
    assert torch.allclose(mid["bn1.running_var"], (sa["bn1.running_var"] + sb["bn1.running_var"]) / 2)
    assert mid["bn1.num_batches_tracked"].dtype == torch.long
    with pytest.raises(InvalidInputError, match="architecture"):
        interpolate_states(sa, {k: v for k, v in sb.items() if k != "fc2.bias"}, 0.5)


def test_trajectory_ends_at_the_origin_and_labels_its_explained_variance():
    model = _trained()
    states = []
    g = torch.Generator().manual_seed(0)
    final = _snapshot(model)
    for e in range(6):  # a path that shrinks toward the final weights
        states.append(
            {
                k: (v + (5 - e) * 0.1 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v)
                for k, v in final.items()
            }
        )
    states[-1] = final
    res = trajectory(states)
    assert res.coords.shape == (6, 2)
    assert np.allclose(res.coords[-1], 0.0, atol=1e-6)
    assert 0 < res.explained[1] <= res.explained[0] <= 1
    d1, d2 = (torch.cat([t.flatten() for t in d.values()]) for d in res.directions)
    assert float(d1.norm()) == pytest.approx(1.0, rel=1e-5) and abs(float(d1 @ d2)) < 1e-5
    with pytest.raises(InvalidInputError, match="at least 3"):
        trajectory(states[:2])


class Quadratic(nn.Module):
    """loss(θ) = ½ θᵀAθ: the Hessian is A."""

    def __init__(self, a: torch.Tensor):
        super().__init__()
        self.a = a
        self.theta = nn.Parameter(torch.ones(a.shape[0]))

    def loss(self):
        return 0.5 * self.theta @ self.a @ self.theta


def test_top_hessian_eigenvalues_of_a_quadratic_are_the_analytic_ones():
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=g))
    eig = torch.tensor([5.0, 3.0, 1.5, 0.5, -0.2, -2.0])
    model = Quadratic(q @ torch.diag(eig) @ q.T)
    before = model.theta.detach().clone()
    res = hessian_top_eigenvalues(model, lambda m: m.loss(), k=2, iters=200, restarts=3, seed=0)
    assert res.values[:, 0] == pytest.approx([5.0] * 3, rel=1e-3)
    assert res.values[:, 1] == pytest.approx([3.0] * 3, rel=1e-3)
    assert torch.equal(model.theta.detach(), before)


def test_the_batch_size_does_not_change_the_surface():
    model, (images, labels) = _trained(), _data(50)
    dirs = random_directions(model, 2, DirectionConfig(seed=2))
    grid = np.linspace(-1, 1, 3)
    plain = surface(model, dirs, grid, grid, images, labels, batch_size=50, fast=False)  # NCHW, one batch per point
    for bs in (None, 7, 128):
        fast = surface(model, dirs, grid, grid, images, labels, batch_size=bs)  # channels_last, chunks
        assert np.allclose(fast.loss, plain.loss, rtol=1e-5, atol=1e-6) and np.array_equal(
            fast.accuracy, plain.accuracy
        )
    assert all(p.is_contiguous() for p in model.parameters())  # the layout is restored


def test_extreme_hessian_eigenvalues_and_the_convexity_ratio_of_a_quadratic():
    from lenscape.analysis.hessian import hessian_extremes

    g = torch.Generator().manual_seed(1)
    q, _ = torch.linalg.qr(torch.randn(5, 5, generator=g))
    model = Quadratic(q @ torch.diag(torch.tensor([4.0, 2.0, 1.0, 0.5, -1.0])) @ q.T)
    lmax, lmin = hessian_extremes(model, lambda m: m.loss(), iters=500)
    assert lmax == pytest.approx(4.0, rel=1e-3) and lmin == pytest.approx(-1.0, rel=1e-2)
    convex = Quadratic(torch.diag(torch.tensor([3.0, 1.0, 0.25])))
    hi, lo = hessian_extremes(convex, lambda m: m.loss(), iters=500)
    assert hi == pytest.approx(3.0, rel=1e-3) and lo == pytest.approx(0.25, rel=1e-2)  # |λmin|/λmax = 1/12


def test_convexity_map_on_a_model_leaves_it_untouched():
    from lenscape.analysis.landscape import convexity_map

    model, (images, labels) = _trained(), _data(24)
    before = _snapshot(model)
    dirs = random_directions(model, 2, DirectionConfig(seed=4))
    x = images.float() / 255
    lmax, lmin, ratio = convexity_map(
        model, dirs, [-0.5, 0.0, 0.5], [0.0], lambda m: F.cross_entropy(m(x), labels), iters=20
    )
    assert lmax.shape == (1, 3) and (lmax >= lmin).all() and np.isfinite(ratio).all()
    assert _same(before, model.state_dict())


def test_the_details_mutation_testing_asked_about():
    model, (images, labels) = _trained(), _data(20)
    params = dict(model.named_parameters())
    (keep,) = random_directions(model, 1, DirectionConfig(norm="filter", ignore_biasbn=False, seed=3))
    for name, t in keep.items():  # 1-D entries kept: normalized as one slice
        assert t.norm() == pytest.approx(float(params[name].norm()), rel=1e-4), name
        if params[name].ndim > 1:
            assert torch.allclose(t.flatten(1).norm(dim=1), params[name].flatten(1).norm(dim=1), rtol=1e-5)
    (raw,) = random_directions(model, 1, DirectionConfig(norm="none", ignore_biasbn=False, seed=3))
    assert not torch.allclose(raw["fc2.bias"].norm(), params["fc2.bias"].norm(), rtol=1e-2)
    assert all(raw[k].dtype == params[k].dtype and raw[k].shape == params[k].shape for k in raw)
    with pytest.raises(InvalidInputError, match="must be one of"):
        DirectionConfig(norm="unit")

    sa, sb = _snapshot(_trained(seed=0)), _snapshot(_trained(seed=5, steps=31))
    assert sa["bn1.num_batches_tracked"] != sb["bn1.num_batches_tracked"]
    assert interpolate_states(sa, sb, 0.2)["bn1.num_batches_tracked"] == sa["bn1.num_batches_tracked"]
    assert interpolate_states(sa, sb, 0.8)["bn1.num_batches_tracked"] == sb["bn1.num_batches_tracked"]
    assert interpolate_states(sa, sb, 0.5)["bn1.num_batches_tracked"] == sb["bn1.num_batches_tracked"]
    with pytest.raises(InvalidInputError, match="fc2.bias"):
        interpolate_states(sa, {k: v for k, v in sb.items() if k != "fc2.bias"}, 0.5)
    wrong = dict(sb, **{"fc2.bias": torch.zeros(7)})
    with pytest.raises(InvalidInputError, match="fc2.bias"):
        interpolate_states(sa, wrong, 0.5)

    dirs = random_directions(model, 2, DirectionConfig(seed=1))
    grid = np.array([-0.5, 0.5])
    res = surface(model, dirs, grid, grid[:1], images, labels)
    assert res.xs.tolist() == [-0.5, 0.5] and res.ys.tolist() == [-0.5] and res.loss.shape == (1, 2)
    for bad in ((dirs, None), (dirs[:1], grid), (dirs * 2, grid)):
        with pytest.raises(InvalidInputError, match="one direction and no y values"):
            surface(model, bad[0], grid, bad[1], images, labels)
    three = [sa, _snapshot(_trained(seed=2)), sb]
    assert trajectory(three).coords.shape == (3, 2)  # three checkpoints are enough


def test_lanczos_is_seeded_says_it_converged_and_orders_a_negative_dominant_spectrum():
    from lenscape.analysis.hessian import hessian_extremes

    g = torch.Generator().manual_seed(2)
    q, _ = torch.linalg.qr(torch.randn(4, 4, generator=g))
    model = Quadratic(q @ torch.diag(torch.tensor([1.0, 0.5, 0.2, -3.0])) @ q.T)  # |λ_min| > λ_max
    lmax, lmin = hessian_extremes(model, lambda m: m.loss(), iters=500)
    assert lmax == pytest.approx(1.0, rel=1e-2) and lmin == pytest.approx(-3.0, rel=1e-3)
    a = hessian_top_eigenvalues(model, lambda m: m.loss(), k=1, iters=500, restarts=2, seed=7)
    b = hessian_top_eigenvalues(model, lambda m: m.loss(), k=1, iters=500, restarts=2, seed=7)
    assert np.array_equal(a.values, b.values) and np.array_equal(a.iterations, b.iterations)
    assert a.values[0, 0] == pytest.approx(-3.0, rel=1e-4)  # largest in magnitude
    assert a.converged.all() and (a.residuals < 1e-3).all() and a.iterations.dtype.kind == "i"


def test_running_variances_never_go_negative_outside_the_segment():
    """Issue 22, 4: linear variances went negative beyond the endpoints and gave NaN losses."""
    a = {
        "bn.running_var": torch.tensor([4.0, 0.3]),
        "bn.running_mean": torch.tensor([0.0, 1.0]),
        "bn.num_batches_tracked": torch.tensor(3),
    }
    b = {
        "bn.running_var": torch.tensor([1.0, 0.7]),
        "bn.running_mean": torch.tensor([1.0, 1.0]),
        "bn.num_batches_tracked": torch.tensor(9),
    }
    inside = interpolate_states(a, b, 0.5)
    assert torch.allclose(inside["bn.running_var"], torch.tensor([2.5, 0.5]))  # linear, as the official code
    beyond = interpolate_states(a, b, 1.5)
    assert (beyond["bn.running_var"] >= 0).all()  # linear: 4 - 1.5·3 = -0.5
    assert beyond["bn.running_var"][0] == pytest.approx((2 + 1.5 * (1 - 2)) ** 2)  # σ extrapolated: 0.5² = 0.25
    s3, s7 = 0.3**0.5, 0.7**0.5  # below 1: no clamp at 1 either
    assert beyond["bn.running_var"][1] == pytest.approx((s3 + 1.5 * (s7 - s3)) ** 2, rel=1e-5)
    assert beyond["bn.running_mean"][0] == pytest.approx(1.5)  # other entries stay linear
    before = interpolate_states(a, b, -0.5)
    assert before["bn.running_var"][0] == pytest.approx((2 - 0.5 * (1 - 2)) ** 2)
    for end, state in ((0.0, a), (1.0, b)):
        got = interpolate_states(a, b, end)
        assert all(torch.equal(got[k], state[k]) for k in a)  # the endpoints exactly


def test_an_interpolation_between_batchnorm_models_beyond_the_segment_has_no_nan():
    def cnn(seed):
        torch.manual_seed(seed)
        net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))
        net.train()
        net(torch.randn(16, 1, 8, 8) * (1 + 3 * seed))  # different running variances
        return net.eval()

    ma, mb = cnn(0), cnn(1)
    images, labels = (torch.rand(20, 1, 8, 8) * 255).to(torch.uint8), torch.randint(0, 10, (20,))
    curve = interpolation(cnn(0), ma.state_dict(), mb.state_dict(), np.linspace(-0.5, 1.5, 9), images, labels)
    assert np.isfinite(curve.loss).all()


def test_a_convexity_point_whose_search_does_not_converge_is_blank_not_wrong():
    from lenscape.analysis.landscape import convexity_map

    model, (images, labels) = _trained(), _data(24)
    x = images.float() / 255
    dirs = random_directions(model, 2, DirectionConfig(seed=1))
    loss = lambda m: F.cross_entropy(m(x), labels)  # noqa: E731
    lmax, lmin, ratio = convexity_map(model, dirs, [0.0], [0.0], loss, iters=1, tol=1e-15)
    assert np.isnan(lmin).all() or np.isnan(lmax).all()  # one restart is too few for 1e-15
    ok_max, ok_min, _ = convexity_map(model, dirs, [0.0], [0.0], loss, iters=300)
    assert np.isfinite(ok_max).all() and np.isfinite(ok_min).all() and ok_min[0, 0] < ok_max[0, 0]


def test_the_convexity_ratio_is_lambda_min_over_lambda_max_at_each_point_and_progress_counts_points():
    from lenscape.analysis.hessian import hessian_extremes
    from lenscape.analysis.landscape import convexity_map

    model, (images, labels) = _trained(), _data(24)
    x = images.float() / 255
    dirs = random_directions(model, 2, DirectionConfig(seed=2))
    loss = lambda m: F.cross_entropy(m(x), labels)  # noqa: E731
    seen: list[tuple[float, str]] = []
    lmax, lmin, ratio = convexity_map(
        model, dirs, [0.0, 0.5], [0.0, -0.5], loss, iters=300, progress=lambda f, m: seen.append((f, m))
    )
    assert np.allclose(ratio, np.abs(lmin) / np.abs(lmax))
    hi, lo = hessian_extremes(model, loss, iters=300)  # the centre point is θ* itself
    assert lmax[0, 0] == pytest.approx(hi, rel=1e-4) and lmin[0, 0] == pytest.approx(lo, rel=1e-3)
    assert [f for f, _ in seen] == [0.25, 0.5, 0.75, 1.0] and seen[-1][1] == "point 4/4"


def test_curves_and_surfaces_carry_accuracy_and_read_float_images_as_uint8_over_255():
    a, b, (images, labels) = _trained(seed=0), _trained(seed=5), _data()
    sa, sb = _snapshot(a), _snapshot(b)
    work = build_model(CNN_BN, seed=9).eval()
    seen: list[float] = []
    curve = interpolation(work, sa, sb, [0.0, 1.0], images, labels, progress=lambda f, m: seen.append(f))
    assert list(curve.alphas) == [0.0, 1.0] and seen == [0.5, 1.0]
    for i, m in enumerate((a, b)):
        ev = evaluate(m, images.float() / 255, labels)
        assert curve.accuracy[i] == pytest.approx(ev.accuracy) and curve.loss[i] == pytest.approx(ev.loss, rel=1e-5)
    as_float = interpolation(work, sa, sb, [0.0, 1.0], images.float() / 255, labels)
    assert np.allclose(as_float.loss, curve.loss, rtol=1e-6)
    dirs = random_directions(a, 2, DirectionConfig(seed=1))
    seen.clear()
    grid = surface(a, dirs, [0.0, 0.5], [0.0], images, labels, progress=lambda f, m: seen.append(f))
    assert grid.accuracy[0, 0] == pytest.approx(evaluate(a, images.float() / 255, labels).accuracy)
    assert seen[-1] == pytest.approx(1.0) and all(0 < f <= 1 for f in seen) and seen == sorted(seen)
    same = surface(a, dirs, [0.0, 0.5], [0.0], images.float() / 255, labels)
    assert np.allclose(same.loss, grid.loss, rtol=1e-6)
