"""BatchNorm statistics recomputed at each landscape point (issue 22, 4; ALGORITHMS.md section 5,
"Mode"): the known answers are written out here with plain tensor code."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lenscape.analysis.landscape import (
    DirectionConfig,
    interpolate_states,
    interpolation,
    random_directions,
    recompute_bn_statistics,
    surface,
)
from lenscape.models.architectures import ArchSpec, build_model
from lenscape.errors import InvalidInputError

# the BatchNorm CNN and its data, shared with the landscape tests
from test_landscape import CNN_BN, _data, _trained  # noqa: E402


def _stats(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and unbiased variance over (N, H, W), in float64 NumPy."""
    a = h.detach().double().numpy()
    return torch.from_numpy(a.mean(axis=(0, 2, 3))), torch.from_numpy(a.var(axis=(0, 2, 3), ddof=1))


def _by_hand(model, images) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The small CNN's train-mode forward over all of `images` written out: each BatchNorm layer's
    input statistics, the layer then normalizing with the batch's own (biased) variance."""
    out, h = {}, model.input_norm(images.float() / 255)
    for conv, bn in ((model.conv1, model.bn1), (model.conv2, model.bn2)):
        h = F.conv2d(h, conv.weight, conv.bias, padding=1)
        out[bn] = _stats(h)
        mean, var = h.mean((0, 2, 3), keepdim=True), h.var((0, 2, 3), unbiased=False, keepdim=True)
        h = (h - mean) / torch.sqrt(var + bn.eps) * bn.weight.view(1, -1, 1, 1) + bn.bias.view(1, -1, 1, 1)
        h = F.max_pool2d(F.relu(h), 2)
    return out


def _snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_recomputed_statistics_are_the_subsets_mean_and_unbiased_variance():
    model, (subset, _) = _trained(), _data(32, seed=7)
    reference = _by_hand(model, subset)
    recompute_bn_statistics(model, subset)
    for bn, (mean, var) in reference.items():
        assert torch.allclose(bn.running_mean.double(), mean, rtol=1e-5, atol=1e-6)
        assert torch.allclose(bn.running_var.double(), var, rtol=1e-5, atol=1e-6)
        assert int(bn.num_batches_tracked) == 1  # one pass over the whole subset


def test_in_chunks_the_statistics_are_the_average_of_the_chunks():
    model, (subset, _) = _trained(), _data(32, seed=7)
    recompute_bn_statistics(model, subset, batch_size=16)  # two equal chunks
    halves = [_by_hand(model, part)[model.bn1] for part in subset.split(16)]
    assert torch.allclose(model.bn1.running_mean.double(), (halves[0][0] + halves[1][0]) / 2, rtol=1e-5, atol=1e-6)
    assert torch.allclose(model.bn1.running_var.double(), (halves[0][1] + halves[1][1]) / 2, rtol=1e-5, atol=1e-6)
    whole = _by_hand(model, subset)[model.bn1][0]  # equal chunks: the subset's own mean
    assert torch.allclose(model.bn1.running_mean.double(), whole, rtol=1e-5, atol=1e-6)
    assert int(model.bn1.num_batches_tracked) == 2


def _moved_copy(model, dirs, coefs):
    moved = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in moved.named_parameters():
            for d, c in zip(dirs, coefs):
                p.add_(d[name], alpha=c)
    return moved


def _loss(model, images, labels):
    with torch.no_grad():
        return float(F.cross_entropy(model.eval()(images.float() / 255), labels))


def test_the_loss_with_recomputed_statistics_at_a_point_is_the_hand_computed_one():
    model, (images, labels), (subset, _) = _trained(), _data(), _data(32, seed=7)
    dirs = random_directions(model, 2, DirectionConfig(seed=1))
    res = surface(model, dirs, [0.0, 0.5], [0.0, 1.0], images, labels, bn_examples=subset)
    assert res.loss_recomputed.shape == res.loss.shape == (2, 2)
    for (iy, ix), coefs in (((0, 1), (0.5, 0.0)), ((1, 1), (0.5, 1.0)), ((0, 0), (0.0, 0.0))):
        moved = _moved_copy(model, dirs, coefs)
        assert res.loss[iy, ix] == pytest.approx(_loss(moved, images, labels), rel=1e-5)  # θ*'s statistics
        for bn, (mean, var) in _by_hand(moved, subset).items():
            bn.running_mean.copy_(mean)
            bn.running_var.copy_(var)
        assert res.loss_recomputed[iy, ix] == pytest.approx(_loss(moved, images, labels), rel=1e-5)
        with torch.no_grad():
            right = (moved.eval()(images.float() / 255).argmax(1) == labels).float().mean()
        assert res.accuracy_recomputed[iy, ix] == pytest.approx(float(right))
    plain = surface(model, dirs, [0.0, 0.5], [0.0, 1.0], images, labels)
    assert np.array_equal(plain.loss, res.loss) and plain.loss_recomputed is None  # stored figures unchanged


def test_the_model_is_bit_identical_afterwards_modes_and_momenta_included():
    model, (images, labels), (subset, _) = _trained(), _data(), _data(32, seed=7)
    model.bn1.momentum = 0.3
    model.train()
    before = _snapshot(model)
    dirs = random_directions(model, 2, DirectionConfig(seed=1))
    surface(model, dirs, [-1.0, 1.0], [0.0, 1.0], images, labels, bn_examples=subset)
    assert _same(before, model.state_dict())  # num_batches_tracked included
    assert model.bn1.momentum == 0.3 and model.bn2.momentum == 0.1
    assert all(m.training for m in model.modules())
    model.eval()
    recompute_bn_statistics(model, subset)
    assert not any(m.training for m in model.modules()) and model.bn1.momentum == 0.3


def test_only_batchnorm_runs_in_train_mode_dropout_and_example_tied_dropout_stay_in_eval():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.Dropout(0.5), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)
    ).eval()
    subset, _ = _data(32, seed=7)
    recompute_bn_statistics(net, subset)
    mean, var = _stats(net[0](subset.float() / 255))  # dropout in eval: the identity
    assert torch.allclose(net[2].running_mean.double(), mean, rtol=1e-5, atol=1e-6)
    assert torch.allclose(net[2].running_var.double(), var, rtol=1e-5, atol=1e-6)
    tied = build_model(
        ArchSpec(
            name="cnn",
            in_shape=(1, 8, 8),
            num_classes=3,
            mean=(0.5,),
            std=(0.5,),
            channels=(4, 6),
            batchnorm=True,
            p_gen=0.5,
            p_mem=0.5,
        ),
        seed=0,
    ).eval()
    recompute_bn_statistics(tied, subset)  # no example ids needed in eval
    assert torch.isfinite(tied.bn2.running_var).all() and not tied.tied_dropout.training


def test_a_model_without_batchnorm_or_a_subset_of_one_is_refused():
    mlp = build_model(
        ArchSpec(name="mlp", in_shape=(1, 8, 8), num_classes=3, mean=(0.5,), std=(0.5,), widths=(8,)), seed=0
    )
    subset, labels = _data(8)
    with pytest.raises(InvalidInputError, match="no BatchNorm"):
        recompute_bn_statistics(mlp, subset)
    (d,) = random_directions(mlp, 1, DirectionConfig(seed=0))
    with pytest.raises(InvalidInputError, match="no BatchNorm"):
        surface(mlp, [d], [0.0], None, subset, labels, bn_examples=subset)
    with pytest.raises(InvalidInputError, match="at least 2"):
        recompute_bn_statistics(_trained(), subset[:1])


def test_interpolation_with_recomputed_statistics_matches_the_hand_computed_loss():
    a, b, (images, labels), (subset, _) = _trained(seed=0), _trained(seed=5), _data(), _data(32, seed=7)
    sa, sb = _snapshot(a), _snapshot(b)
    work = build_model(CNN_BN, seed=9).eval()
    before = _snapshot(work)
    alphas = np.array([-0.5, 0.0, 0.5, 1.5])
    curve = interpolation(work, sa, sb, alphas, images, labels, bn_examples=subset)
    assert _same(before, work.state_dict())
    plain = interpolation(work, sa, sb, alphas, images, labels)
    assert np.array_equal(curve.loss, plain.loss) and plain.loss_recomputed is None
    for i, alpha in enumerate(alphas):
        ref = build_model(CNN_BN, seed=9)
        ref.load_state_dict(interpolate_states(sa, sb, float(alpha)))
        for bn, (mean, var) in _by_hand(ref, subset).items():
            bn.running_mean.copy_(mean)
            bn.running_var.copy_(var)
        assert curve.loss_recomputed[i] == pytest.approx(_loss(ref, images, labels), rel=1e-5)
    assert np.isfinite(curve.accuracy_recomputed).all()


class _SmallMemory(nn.Module):
    """Raises CUDA's out-of-memory error for batches above `limit`, as a device of small memory would."""

    def __init__(self, inner, limit):
        super().__init__()
        self.inner, self.limit = inner, limit

    def forward(self, x):
        if len(x) > self.limit:
            raise torch.cuda.OutOfMemoryError(f"{len(x)} examples do not fit")
        return self.inner(x)


def test_out_of_memory_halves_the_chunks_until_they_fit_and_gives_up_at_two_examples():
    model, (subset, _) = _trained(), _data(32, seed=7)
    small = _SmallMemory(model, limit=8)
    recompute_bn_statistics(small, subset)  # 1 → 2 → 4 chunks of 8
    assert int(model.bn1.num_batches_tracked) == 4
    quarters = [_by_hand(model, part)[model.bn1] for part in subset.split(8)]
    assert torch.allclose(model.bn1.running_mean.double(), sum(q[0] for q in quarters) / 4, rtol=1e-5, atol=1e-6)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        recompute_bn_statistics(_SmallMemory(model, limit=1), subset)  # chunks of 2 are the floor


def test_two_examples_are_enough():
    model, (subset, _) = _trained(), _data(2, seed=7)
    recompute_bn_statistics(model, subset)
    assert torch.allclose(model.bn1.running_mean.double(), _by_hand(model, subset)[model.bn1][0], rtol=1e-5, atol=1e-6)
