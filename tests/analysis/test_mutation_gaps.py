"""Cases that mutation testing showed no test looked at: explained targets, CKA's Gram-matrix
path, dropped constant features, the out-of-memory retry, the blurred baseline, scale and ties."""

import numpy as np
import pytest
import torch
from torch import nn

from lenscape.analysis.saliency import SaliencyConfig, attribute, compute_saliency, ig_baseline, null_mass_at_k
from lenscape.analysis.sanity import _average_ranks, spearman
from lenscape.analysis.similarity import _median, cca, linear_cka
from lenscape.errors import InvalidInputError
from test_similarity_reference import ref_linear_cka


class Lin(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.flatten, self.fc = nn.Flatten(), nn.Linear(16, 4)

    def forward(self, x):
        return self.fc(self.flatten(x))


def test_targets_predicted_true_or_a_chosen_class():
    model, x, labels = Lin().eval(), torch.rand(5, 1, 4, 4), torch.tensor([3, 2, 1, 0, 3])
    pred = model(x).argmax(1)
    w = model.fc.weight
    for target, expected in (("predicted", pred), ("true", labels), (2, torch.full((5,), 2))):
        res = compute_saliency(model, x, labels, SaliencyConfig(method="gradient", target=target))
        assert res.targets.tolist() == expected.tolist()
        assert np.allclose(res.attributions.reshape(5, -1), w[expected].detach().numpy(), atol=1e-6)
    assert compute_saliency(model, x, labels, SaliencyConfig(target=0)).targets.tolist() == [0] * 5
    for bad in (4, -1):
        with pytest.raises(InvalidInputError, match=r"target class must be in \[0, 3\]"):
            compute_saliency(model, x, labels, SaliencyConfig(target=bad))


def test_out_of_memory_halves_the_chunk_and_keeps_the_answer():
    class Picky(Lin):
        """Raises CUDA's out-of-memory error for chunks above 2 images, as a small GPU would."""

        def forward(self, x):
            if len(x) > 2:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
            return super().forward(x)

    model, x, t = Picky().eval(), torch.rand(7, 1, 4, 4), torch.tensor([0, 1, 2, 3, 0, 1, 2])
    got = attribute(model, x, t, SaliencyConfig(method="gradient", batch_size=8))
    assert torch.allclose(got.flatten(1), model.fc.weight[t], atol=1e-6)

    class Hopeless(Lin):
        def forward(self, x):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    with pytest.raises(torch.cuda.OutOfMemoryError):
        attribute(Hopeless().eval(), x, t, SaliencyConfig(method="gradient", batch_size=4))


def test_blurred_baseline_is_a_gaussian_blur_about_a_quarter_of_the_image():
    x = torch.zeros(1, 1, 28, 28)
    x[0, 0, 14, 14] = 1.0
    blurred = ig_baseline(x, SaliencyConfig(baseline="blurred"))
    side, sigma = 7, 7 / 3.0  # 28 // 4 = 7, odd
    r = torch.arange(side) - side // 2
    g = torch.exp(-(r.float() ** 2) / (2 * sigma**2))
    kernel = torch.outer(g, g) / torch.outer(g, g).sum()
    assert torch.allclose(blurred[0, 0, 11:18, 11:18], kernel, atol=1e-6)
    assert blurred[0, 0, :11].abs().max() == 0
    const = torch.full((2, 3, 12, 12), 0.3)
    assert torch.allclose(ig_baseline(const, SaliencyConfig(baseline="blurred")), const, atol=1e-6)


def test_linear_cka_with_more_features_than_examples_uses_the_gram_path_correctly():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(30, 50))
    y = x @ rng.normal(size=(50, 40)) + rng.normal(size=(30, 40))
    assert linear_cka(x, y) == pytest.approx(ref_linear_cka(x, y), abs=1e-10)


def test_cca_drops_constant_features_as_if_they_were_not_there():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(200, 5)), rng.normal(size=(200, 4))
    y[:, :2] += x[:, :2]
    with pytest.warns(UserWarning, match="dropped 1 constant"):
        with_const = cca(np.hstack([x, np.full((200, 1), 3.0)]), y)
    assert with_const == pytest.approx(cca(x, y), abs=1e-10)
    with pytest.warns(UserWarning, match="dropped 1 constant"):
        assert cca(x, np.hstack([y, np.zeros((200, 1))])) == pytest.approx(cca(x, y), abs=1e-10)


def test_median_of_any_tensor_is_numpys():
    rng = np.random.default_rng(4)
    for n in (1, 2, 7, 10):
        a = rng.normal(size=n)
        assert float(_median(torch.tensor(a))) == pytest.approx(np.median(a), abs=1e-15)


def test_ranks_ties_and_two_element_rows():
    assert _average_ranks(torch.tensor([[10.0, 20.0, 20.0, 5.0]])).tolist() == [[2.0, 3.5, 3.5, 1.0]]
    assert float(spearman(torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, 4.0]]))) == pytest.approx(1.0)
    assert float(spearman(torch.tensor([[1.0, 2.0]]), torch.tensor([[4.0, 3.0]]))) == pytest.approx(-1.0)


@pytest.mark.parametrize("scale", [1e-6, 1.0, 1e6])
def test_null_mass_does_not_depend_on_the_scale_of_the_map(scale):
    mask = torch.zeros(2, 1, 4, 4, dtype=torch.bool)
    mask[:, :, 2:] = True
    torch.manual_seed(0)
    attr = torch.rand(2, 1, 4, 4)
    assert torch.allclose(null_mass_at_k(scale * attr, mask, 0.25), null_mass_at_k(attr, mask, 0.25), atol=1e-6)
    # the smallest k still keeps one coordinate: the largest, here put in the null block
    attr[:, :, 3, 3] = 5.0
    assert torch.allclose(null_mass_at_k(scale * attr, mask, 1e-4), torch.ones(2))
