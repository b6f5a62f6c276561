"""The checks that used to exist only as jobs, as plain functions (issue 24): null mass, DiffROAR, the
seed matrix and the memorization curves, each against a reference computed here (autograd or NumPy,
not Lenscape's own helpers), on models small enough to train in a second. These are also the
always-run stand-ins of the `paper` tests (BlockMNIST's null mass, seed similarity on MNIST)."""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from lenscape.analysis import DiffRoarConfig, SaliencyConfig, diffroar, memorization_curves, null_mass, seed_matrix


def _digits(n: int = 600) -> tuple[torch.Tensor, torch.Tensor]:
    d = load_digits()
    x = torch.tensor(d.images[:n] / 16.0, dtype=torch.float32).unsqueeze(1)  # (N, 1, 8, 8) in [0, 1]
    return x, torch.tensor(d.target[:n])


def _mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 10))


def _train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int = 60, seed: int = 0) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(100):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


def _linear_cka(a: np.ndarray, b: np.ndarray) -> float:
    """Kornblith et al.'s formula, written out in float64."""
    a, b = a - a.mean(0), b - b.mean(0)
    return float(np.linalg.norm(b.T @ a) ** 2 / (np.linalg.norm(a.T @ a) * np.linalg.norm(b.T @ b)))


def test_seed_matrix_is_cka_of_the_hidden_layer_and_trained_seeds_beat_a_random_network():
    x, y = _digits()
    nets = [_train(_mlp(s), x, y, epochs=15, seed=s) for s in (0, 1)]
    res = seed_matrix(nets, x, "2", random_model=_mlp(7).eval())
    with torch.no_grad():
        hidden = [torch.relu(n[1](x.flatten(1))).double().numpy() for n in nets]
        rand = torch.relu(_mlp(7)[1](x.flatten(1))).double().numpy()
    assert res.values == pytest.approx(np.array([[1.0, _linear_cka(*hidden)], [_linear_cka(*hidden), 1.0]]), abs=1e-6)
    base = [_linear_cka(h, rand) for h in hidden]
    assert res.baseline == pytest.approx(np.maximum.outer(base, base), abs=1e-6)  # a pair's larger value
    assert res.values[0, 1] > res.baseline[0, 1] + 0.05 and not res.notes  # trained seeds agree beyond chance


def test_null_mass_of_a_model_that_reads_one_block_is_zero_and_of_one_that_reads_both_is_about_half():
    """BlockMNIST's logic on a linear model: gradients live where the weights are."""
    torch.manual_seed(0)
    x, y = torch.rand(6, 1, 8, 8), torch.arange(6) % 2
    null = torch.zeros(6, 1, 8, 8, dtype=torch.bool)
    null[:, :, 4:] = True  # the bottom half carries nothing
    top_only = nn.Sequential(nn.Flatten(), nn.Linear(64, 2)).eval()
    with torch.no_grad():
        top_only[1].weight[:, 32:] = 0
    res = null_mass(top_only, x, y, null, [SaliencyConfig(method="gradient", target="true")], k_grid=(0.1, 0.5))
    assert res.mass.shape == (1, 2, 6) and float(res.mass.max()) == 0.0 and res.null_share == 0.5
    both = nn.Sequential(nn.Flatten(), nn.Linear(64, 2)).eval()
    res = null_mass(both, x, y, null, [SaliencyConfig(method="gradient", target="true")], k_grid=(0.25,))
    # the reference: autograd's gradient of the true class's logit, ranked by |·|, top 16 of 64 coordinates
    xr = x.clone().requires_grad_(True)
    both(xr).gather(1, y[:, None]).sum().backward()
    g = xr.grad.abs().flatten(1).numpy()
    top = np.argsort(-g, axis=1)[:, :16]
    mass = np.take_along_axis(g, top, 1)
    in_null = top >= 32
    assert res.mass[0, 0] == pytest.approx((mass * in_null).sum(1) / mass.sum(1), abs=1e-6)
    assert res.examples.shape == (1, 4, 1, 8, 8)


def test_memorization_curves_are_the_accuracies_by_hand():
    x, y = _digits(300)
    noisy = torch.zeros(300, dtype=torch.bool)
    noisy[::10] = True
    y_noisy = torch.where(noisy, (y + 1) % 10, y)
    net = _mlp(0)
    states = {0: {k: v.clone() for k, v in net.state_dict().items()}}
    _train(net, x, y_noisy, epochs=10)
    states[10] = {k: v.clone() for k, v in net.state_dict().items()}
    curves = memorization_curves(_mlp(3), states, x, y_noisy, noisy, y, x[:100], y[:100])
    assert curves.epochs == [0, 10]
    for i, e in enumerate((0, 10)):
        ref = _mlp(0)
        ref.load_state_dict(states[e])
        with torch.no_grad():
            pred = ref(x).argmax(1)
        assert curves.clean_acc[i] == pytest.approx(float((pred[~noisy] == y[~noisy]).float().mean()))
        assert curves.noisy_acc[i] == pytest.approx(float((pred[noisy] == y_noisy[noisy]).float().mean()))
        assert curves.noisy_true_acc[i] == pytest.approx(float((pred[noisy] == y[noisy]).float().mean()))
        assert curves.test_acc[i] == pytest.approx(float((pred[:100] == y[:100]).float().mean()))
    assert curves.clean_acc[1] > 0.8 > curves.clean_acc[0]


def test_diffroar_masks_the_top_and_bottom_coordinates_and_scores_each_seed():
    """The retraining here is a nearest-class-mean classifier: quick, deterministic, and it depends on
    which pixels are kept, so the masks DiffROAR builds are checked through the scores."""
    x, y = _digits(400)
    images = (x * 255).round().to(torch.uint8)
    model = _train(_mlp(0), x, y, epochs=10)
    seen = []

    def centroid_score(tr_x, tr_y, te_x, te_y, seed):
        seen.append((tr_x, seed))
        tr, te = tr_x.flatten(1).double(), te_x.flatten(1).double()
        means = torch.stack([tr[tr_y == c].mean(0) for c in range(10)])
        return float((torch.cdist(te, means).argmin(1) == te_y).double().mean())

    cfg = DiffRoarConfig(methods=("gradient",), k_grid=(0.1, 0.5), seeds=(0, 1), epochs=1)
    res = diffroar(model, (images[:300], y[:300]), (images[300:], y[300:]), centroid_score, cfg, fill=0)
    assert res.methods == ["gradient", "random"] and res.acc_top.shape == (2, 2, 2)
    assert len(seen) == cfg.n_trainings and {s for _, s in seen} == {0, 1}
    # the reference mask: |∂ logit_y / ∂x| by autograd, the top 10 % of the 64 pixels kept per image
    xr = (images[:300].float() / 255).requires_grad_(True)  # the pixels as stored
    model(xr).gather(1, y[:300, None]).sum().backward()
    g = xr.grad.abs().flatten(1)
    keep = torch.zeros_like(g, dtype=torch.bool).scatter_(1, g.topk(6, dim=1).indices, True)
    expected = torch.where(keep.view_as(images[:300]), images[:300], torch.zeros_like(images[:300]))
    assert torch.equal(seen[0][0], expected)
    # the gradient's top pixels carry more of the class than its bottom ones; random ranking does not care
    assert res.diff_mean[0, 0] > 0.1 and abs(res.diff_mean[1, 0]) < res.diff_mean[0, 0]
    assert res.diff_mean.shape == (2, 2) and np.all(res.diff_std >= 0)
