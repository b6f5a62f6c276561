"""DeepLift on an imported torchvision classifier (issue 21, finding 12): its input normalization
is a forward pre-hook, which Captum's DeepLift calls with (inputs, baselines) tuples; its ResNet
blocks call one in-place ReLU module twice, which Captum's DeepLift cannot follow. Checked against
Captum on the same network written out by hand (normalization as a layer, a ReLU module per call)
and against DeepLift's completeness, on a tiny case and on ResNet-18."""

import torch
from torch import nn

from lenscape.analysis.saliency import SaliencyConfig, compute_saliency, unshared_activations
from lenscape.models.architectures import ArchSpec, Chain, InputNorm, build_model


def _two_relu_forward(block, x):
    """torchvision's BasicBlock.forward with its second ReLU call on a module of its own."""
    identity = x if block.downsample is None else block.downsample(x)
    out = block.relu(block.bn1(block.conv1(x)))
    return block.relu2(block.bn2(block.conv2(out)) + identity)


def _resnet18_pair(maxpool: bool = True):
    """(ours: an imported torchvision ResNet-18 with its normalization hook, a reference written by
    hand: the same weights with the normalization as a layer and every ReLU call its own module)."""
    import types

    import torchvision

    spec = ArchSpec(
        name="torchvision",
        torchvision_name="resnet18",
        in_shape=(3, 32, 32),
        num_classes=10,
        mean=(0.4, 0.5, 0.6),
        std=(0.2, 0.25, 0.3),
    )
    torch.manual_seed(0)
    ours = build_model(spec).eval()
    bare = torchvision.models.resnet18(num_classes=10)
    bare.load_state_dict({k: v for k, v in ours.state_dict().items() if not k.startswith("input_norm")})
    if not maxpool:
        ours.maxpool = bare.maxpool = torch.nn.Identity()
    for block in (b for layer in (bare.layer1, bare.layer2, bare.layer3, bare.layer4) for b in layer):
        block.relu, block.relu2 = torch.nn.ReLU(), torch.nn.ReLU()
        block.forward = types.MethodType(_two_relu_forward, block)
    bare.relu = torch.nn.ReLU()
    reference = Chain()
    reference.add_module("norm", InputNorm(spec.mean, spec.std))
    reference.add_module("net", bare)
    return ours, reference.eval()


def test_deeplift_on_a_torchvision_resnet_matches_captum_on_the_same_network_written_out():
    from captum.attr import DeepLift

    ours, reference = _resnet18_pair()
    x, y = torch.rand(2, 3, 32, 32), torch.tensor([1, 7])
    got = compute_saliency(ours, x, y, SaliencyConfig(method="deeplift", target="true")).attributions
    expected = DeepLift(reference).attribute(x.clone().requires_grad_(), target=y, baselines=torch.zeros_like(x))
    assert got.shape == (2, 3, 32, 32) and float(expected.abs().sum()) > 0
    assert torch.allclose(torch.from_numpy(got), expected.detach(), atol=1e-6, rtol=1e-4)


def test_deeplift_on_a_torchvision_resnet_is_complete():
    """Rescale-rule DeepLift sums to f(x) - f(baseline) exactly where Captum's rules are exact (its
    max-pool rule is not, for a baseline other than zero, so that layer is left out here)."""
    ours, _ = _resnet18_pair(maxpool=False)
    x, y = torch.rand(3, 3, 32, 32), torch.tensor([0, 4, 9])
    got = compute_saliency(ours, x, y, SaliencyConfig(method="deeplift", target="true")).attributions
    with torch.no_grad():
        diff = ours(x)[torch.arange(3), y] - ours(torch.zeros_like(x))[torch.arange(3), y]
    assert torch.allclose(torch.from_numpy(got).flatten(1).sum(1), diff, atol=1e-4)


class _Twice(nn.Module):
    """A block that calls one (in-place) ReLU module twice: what unshared_activations separates."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.out = nn.Linear(6, 5), nn.Linear(5, 5), nn.Linear(5, 3)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.out(self.relu(self.b(self.relu(self.a(x.flatten(1))))))


def test_a_module_called_twice_gets_a_copy_per_call_and_the_model_is_left_as_it_was():
    torch.manual_seed(0)
    model = _Twice().eval()
    x = torch.randn(4, 1, 2, 3)
    net = unshared_activations(model, x[:1])
    relus = [m for m in net.modules() if isinstance(m, nn.ReLU)]
    assert len(relus) == 2 and model.relu in relus  # the first call keeps the model's
    assert [n for n, m in model.named_modules() if isinstance(m, nn.ReLU)] == ["relu"]  # the model: unchanged
    assert torch.equal(net(x), model(x))


def test_a_model_that_needs_nothing_is_returned_as_is():
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3)).eval()
    assert unshared_activations(model, torch.randn(1, 1, 2, 3)) is model


def test_deeplift_on_a_module_called_twice_is_complete_and_equals_the_hand_written_network():
    from captum.attr import DeepLift

    torch.manual_seed(1)
    model = _Twice().eval()
    x, y = torch.randn(5, 1, 2, 3), torch.tensor([0, 1, 2, 0, 1])
    got = torch.from_numpy(compute_saliency(model, x, y, SaliencyConfig(method="deeplift", target="true")).attributions)
    written = nn.Sequential(nn.Flatten(), model.a, nn.ReLU(), model.b, nn.ReLU(), model.out).eval()
    expected = DeepLift(written).attribute(x.clone().requires_grad_(), target=y, baselines=torch.zeros_like(x))
    assert torch.allclose(got, expected.detach(), atol=1e-6)
    with torch.no_grad():
        diff = model(x)[torch.arange(5), y] - model(torch.zeros_like(x))[torch.arange(5), y]
    assert torch.allclose(got.flatten(1).sum(1), diff, atol=1e-5)


class _Branchy(_Twice):
    """Calls its ReLU twice behind a data-dependent branch, which torch.fx cannot trace."""

    def forward(self, x):
        h = self.relu(self.a(x.flatten(1)))
        if h.sum() > -1:
            h = self.relu(self.b(h))
        return self.out(h)


def test_a_model_that_cannot_be_separated_says_so_and_what_to_use():
    import pytest

    from lenscape.errors import InvalidInputError

    x, y = torch.randn(2, 1, 2, 3), torch.tensor([0, 1])
    with pytest.raises(InvalidInputError, match=r"calls \['relu'\] more than once .*TraceError.*Integrated Gradients"):
        compute_saliency(_Branchy().eval(), x, y, SaliencyConfig(method="deeplift", target="true"))
