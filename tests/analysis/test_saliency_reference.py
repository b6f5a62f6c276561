"""Each attribution method against an independent reference computed here: worked by hand on a
one-hidden-layer ReLU network, written as a plain loop, or Captum called directly (with its own
per-example gradient helper). Lenscape's maps must agree with all of them."""

import captum.attr as ca
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lenscape.analysis.saliency import SaliencyConfig, attribute, noise_for, null_mass_at_k
from lenscape.models.architectures import ArchSpec, build_model


class TwoLayer(nn.Module):
    """out = W2 relu(W1 x + b1) + b2 on flattened input: small enough to work out by hand."""

    def __init__(self, d_in=12, hidden=7, classes=3, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.flatten, self.fc1, self.relu, self.fc2 = (
            nn.Flatten(),
            nn.Linear(d_in, hidden),
            nn.ReLU(),
            nn.Linear(hidden, classes),
        )

    def forward(self, x):
        return self.fc2(self.relu(self.fc1(self.flatten(x))))


@pytest.fixture
def net():
    return TwoLayer().eval()


@pytest.fixture
def batch():
    torch.manual_seed(1)
    return torch.rand(5, 1, 3, 4), torch.tensor([0, 1, 2, 1, 0])


def _cnn(channels=1, side=12, bn=False):
    torch.manual_seed(0)
    return build_model(
        ArchSpec(
            name="cnn",
            in_shape=(channels, side, side),
            num_classes=4,
            mean=(0.5,) * channels,
            std=(0.3,) * channels,
            batchnorm=bn,
        )
    ).eval()


def test_guided_backprop_passes_only_positive_gradients_through_relus(net, batch):
    x, t = batch
    z = net.fc1(x.flatten(1))  # (B, H) pre-activations
    g_h = net.fc2.weight[t]  # (B, H) d out_t / d relu
    g_z = F.relu(g_h * (z > 0))  # guided: negative gradients stopped
    expected = (g_z @ net.fc1.weight).view_as(x)
    got = attribute(net, x, t, SaliencyConfig(method="guided_backprop"))
    assert torch.allclose(got, expected, atol=1e-6)
    plain = ((g_h * (z > 0)) @ net.fc1.weight).view_as(x)
    assert not torch.allclose(got, plain, atol=1e-3)  # and it is not the plain gradient


@pytest.mark.parametrize("baseline", ["zeros", "mean"])
def test_deeplift_rescale_rule_by_hand_with_the_chosen_baseline(net, batch, baseline):
    x, t = batch
    cfg = SaliencyConfig(method="deeplift", baseline=baseline, baseline_mean=(0.4,))
    ref = torch.zeros_like(x) if baseline == "zeros" else torch.full_like(x, 0.4)
    z, z0 = net.fc1(x.flatten(1)), net.fc1(ref.flatten(1))
    dz = z - z0
    mult = torch.where(dz.abs() > 1e-9, (F.relu(z) - F.relu(z0)) / dz, (z > 0).float())  # Δrelu / Δz
    expected = (((net.fc2.weight[t] * mult) @ net.fc1.weight) * (x - ref).flatten(1)).view_as(x)
    got = attribute(net, x, t, cfg)
    assert torch.allclose(got, expected, atol=1e-5)
    # summation to delta: the attributions add up to f_t(x) - f_t(baseline)
    gap = net(x).gather(1, t[:, None])[:, 0] - net(ref).gather(1, t[:, None])[:, 0]
    assert torch.allclose(got.flatten(1).sum(1), gap, atol=1e-5)


def test_occlusion_is_the_average_drop_over_the_windows_covering_each_pixel():
    model, x, t = _cnn(), torch.rand(2, 1, 12, 12), torch.tensor([1, 3])
    cfg = SaliencyConfig(method="occlusion", window=4, stride=2)
    with torch.no_grad():
        full = model(x).gather(1, t[:, None])[:, 0]
        total, count = torch.zeros_like(x), torch.zeros_like(x)
        for i in range(0, 12 - 4 + 1, 2):
            for j in range(0, 12 - 4 + 1, 2):
                xo = x.clone()
                xo[:, :, i : i + 4, j : j + 4] = 0
                drop = full - model(xo).gather(1, t[:, None])[:, 0]
                total[:, :, i : i + 4, j : j + 4] += drop.view(-1, 1, 1, 1)
                count[:, :, i : i + 4, j : j + 4] += 1
    assert torch.allclose(attribute(model, x, t, cfg), total / count, atol=1e-5)


def test_gradcam_by_hand_from_activations_and_gradients():
    model, x, t = _cnn(), torch.rand(3, 1, 12, 12), torch.tensor([0, 2, 3])
    acts = {}
    handle = model.conv2.register_forward_hook(lambda m, i, o: acts.__setitem__("a", o))
    out = model(x)
    handle.remove()
    a = acts["a"]  # (B, K, h, w)
    grads = torch.autograd.grad(out.gather(1, t[:, None]).sum(), a)[0]
    weights = grads.mean(dim=(2, 3), keepdim=True)  # α_k: spatial mean of the gradient
    cam = F.relu((weights * a).sum(1, keepdim=True))
    expected = F.interpolate(cam, size=(12, 12), mode="bilinear", align_corners=False)
    got = attribute(model, x, t, SaliencyConfig(method="gradcam", layer="conv2"))
    assert torch.allclose(got, expected.detach(), atol=1e-6)
    assert (got >= 0).all() and got.flatten(1).std(1).min() > 0


@pytest.mark.parametrize("kind", ["smoothgrad", "vargrad"])
def test_noise_tunnels_are_the_mean_and_variance_of_gradients_at_the_documented_noise(kind):
    model, x, t = _cnn(), torch.rand(3, 1, 12, 12), torch.tensor([0, 1, 2])
    cfg = SaliencyConfig(method=kind, n_samples=6, noise_level=0.2, seed=4)
    got = attribute(model, x, t, cfg)
    for i in range(3):
        noisy = (x[i] + noise_for(cfg, i, x.shape[1:], x.dtype)).requires_grad_(True)  # (S, C, H, W)
        g = torch.autograd.grad(model(noisy)[:, t[i]].sum(), noisy)[0]
        expected = g.mean(0) if kind == "smoothgrad" else (g**2).mean(0) - g.mean(0) ** 2
        assert torch.allclose(got[i], expected, atol=1e-6)
    n = noise_for(cfg, 0, x.shape[1:], x.dtype)
    assert n.shape == (6, 1, 12, 12) and abs(float(n.std()) - 0.2) < 0.03
    assert not torch.equal(n, noise_for(cfg, 1, x.shape[1:], x.dtype))


@pytest.mark.parametrize("kind", ["smoothgrad", "vargrad"])
def test_noise_tunnels_do_not_depend_on_the_chunk_size(kind):
    """The issue's case: four CIFAR-sized images, 128 per chunk vs 1."""
    model, x, t = _cnn(channels=3, side=32), torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    cfg = SaliencyConfig(method=kind, n_samples=8, seed=2)
    one = attribute(model, x, t, SaliencyConfig(**{**cfg.__dict__, "batch_size": 1}))
    assert torch.allclose(attribute(model, x, t, cfg), one, atol=1e-6)


def test_linear_model_smoothgrad_is_the_weight_row_and_vargrad_is_zero(batch):
    lin = nn.Sequential(nn.Flatten(), nn.Linear(12, 3)).eval()
    x, t = batch
    sg = attribute(lin, x, t, SaliencyConfig(method="smoothgrad", n_samples=5))
    vg = attribute(lin, x, t, SaliencyConfig(method="vargrad", n_samples=5))
    assert torch.allclose(sg.flatten(1), lin[1].weight[t], atol=1e-6)
    assert vg.abs().max() < 1e-6


CAPTUM_DIRECT = {
    "gradient": lambda m, x, t: ca.Saliency(m).attribute(x, target=t, abs=False),
    "gradient_x_input": lambda m, x, t: ca.InputXGradient(m).attribute(x, target=t),
    "integrated_gradients": lambda m, x, t: ca.IntegratedGradients(m).attribute(
        x, baselines=torch.zeros_like(x), target=t, n_steps=16
    ),
    "guided_backprop": lambda m, x, t: ca.GuidedBackprop(m).attribute(x, target=t),
    "deeplift": lambda m, x, t: ca.DeepLift(m).attribute(x, baselines=torch.zeros_like(x), target=t),
}


@pytest.mark.parametrize("method", sorted(CAPTUM_DIRECT))
@pytest.mark.parametrize("bn", [False, True])
def test_equals_captum_called_directly(method, bn):
    model, x, t = _cnn(bn=bn), torch.rand(6, 1, 12, 12), torch.tensor([0, 1, 2, 3, 0, 1])
    if bn:  # BatchNorm with non-trivial running statistics, used in eval mode
        model.bn1.running_mean.uniform_(-0.5, 0.5)
        model.bn1.running_var.uniform_(0.5, 2.0)
    expected = CAPTUM_DIRECT[method](model, x.clone().requires_grad_(True), t)
    got = attribute(model, x, t, SaliencyConfig(method=method, n_steps=16))
    assert torch.allclose(got, expected, atol=1e-5)


def test_null_mass_is_the_share_of_mass_not_of_count():
    mask = torch.zeros(1, 1, 2, 4, dtype=torch.bool)
    mask[..., 1, :] = True  # bottom row is the null block
    attr = torch.tensor([[[[9.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.0]]]])
    # top-4 coordinates: 9 (signal) and three 1s (null): mass share 3/12, count share 3/4
    assert float(null_mass_at_k(attr, mask, 0.5)) == pytest.approx(3 / 12)
    # k with a tie at the cut: top-3 of [9, 1, 1, 1] takes two of the three tied 1s, shared evenly
    assert float(null_mass_at_k(attr, mask, 3 / 8)) == pytest.approx(2 / 11)
    assert float(null_mass_at_k(-attr, mask, 0.5)) == pytest.approx(3 / 12)  # |attribution|
