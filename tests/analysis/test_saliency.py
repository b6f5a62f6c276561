import pytest
import torch
from torch import nn

from lenscape.analysis.saliency import (
    METHODS,
    SaliencyConfig,
    attribute,
    compute_saliency,
    null_mass_at_k,
    suggest_gradcam_layer,
    to_map,
)
from lenscape.models.architectures import ArchSpec, build_model
from lenscape.errors import InvalidInputError


class Linear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.flatten, self.fc = nn.Flatten(), nn.Linear(12, 3)

    def forward(self, x):
        return self.fc(self.flatten(x))


@pytest.fixture
def linear():
    return Linear().eval()


def test_logit_gradient_of_linear_model_is_the_weight_row(linear):
    x = torch.rand(4, 1, 3, 4)
    attr = attribute(linear, x, torch.tensor([0, 1, 2, 1]), SaliencyConfig(method="gradient"))
    for i, t in enumerate([0, 1, 2, 1]):
        assert torch.allclose(attr[i].flatten(), linear.fc.weight[t], atol=1e-6)


def test_integrated_gradients_of_linear_model_is_weight_times_input(linear):
    x = torch.rand(4, 1, 3, 4)
    attr = attribute(
        linear,
        x,
        torch.tensor([2, 0, 1, 2]),
        SaliencyConfig(method="integrated_gradients", baseline="zeros", n_steps=20),
    )
    for i, t in enumerate([2, 0, 1, 2]):
        assert torch.allclose(attr[i].flatten(), linear.fc.weight[t] * x[i].flatten(), atol=1e-5)


def test_loss_gradient_equals_autograd_of_cross_entropy(linear):
    x, y = torch.rand(3, 1, 3, 4), torch.tensor([0, 2, 1])
    attr = attribute(linear, x, y, SaliencyConfig(method="loss_gradient"))
    xr = x.clone().requires_grad_(True)
    nn.functional.cross_entropy(linear(xr), y, reduction="sum").backward()
    assert torch.allclose(attr, xr.grad, atol=1e-6)


def _cnn():
    torch.manual_seed(0)
    return build_model(ArchSpec(name="cnn", in_shape=(1, 12, 12), num_classes=4, mean=(0.5,), std=(0.3,))).eval()


def test_ig_completeness_delta_on_a_small_cnn():
    model, x = _cnn(), torch.rand(6, 1, 12, 12)
    result = compute_saliency(
        model,
        x,
        torch.zeros(6, dtype=torch.long),
        SaliencyConfig(method="integrated_gradients", n_steps=200, target="predicted"),
    )
    assert result.delta is not None and float(abs(result.delta).max()) < 1e-3


@pytest.mark.parametrize("method", [m for m in METHODS if m != "gradcam"])
def test_batched_equals_unbatched(method):
    model, x = _cnn(), torch.rand(5, 1, 12, 12)
    cfg = SaliencyConfig(method=method, n_samples=4, n_steps=8, window=4, stride=4, seed=3)
    target = torch.tensor([0, 1, 2, 3, 0])
    full = attribute(model, x, target, cfg)
    chunks = attribute(model, x, target, SaliencyConfig(**{**cfg.__dict__, "batch_size": 2}))
    assert full.shape == x.shape
    assert torch.allclose(full, chunks, atol=1e-5)  # noise too: it is drawn per image, not per chunk


def test_gradcam_layer_checks_and_shape():
    model = _cnn()
    assert suggest_gradcam_layer(model) == "conv2"
    attr = attribute(
        model, torch.rand(2, 1, 12, 12), torch.tensor([0, 1]), SaliencyConfig(method="gradcam", layer="conv2")
    )
    assert attr.shape == (2, 1, 12, 12)
    with pytest.raises(InvalidInputError, match="not a convolutional"):
        attribute(model, torch.rand(2, 1, 12, 12), torch.tensor([0, 1]), SaliencyConfig(method="gradcam", layer="fc1"))
    mlp = build_model(ArchSpec(name="mlp", in_shape=(1, 12, 12), num_classes=4, mean=(0.5,), std=(0.3,)))
    with pytest.raises(InvalidInputError, match="no convolutional layer"):
        suggest_gradcam_layer(mlp)
    with pytest.raises(InvalidInputError, match="needs a layer"):
        SaliencyConfig(method="gradcam")


def test_null_mass_known_answers():
    mask = torch.zeros(3, 1, 8, 4, dtype=torch.bool)
    mask[:, :, 4:] = True  # bottom half is the null block: share 0.5
    uniform = torch.ones(3, 1, 8, 4)
    for k in (0.05, 0.3, 1.0):
        assert torch.allclose(null_mass_at_k(uniform, mask, k), torch.full((3,), 0.5))
    zero_on_null = torch.rand(3, 1, 8, 4) + 0.1
    zero_on_null[mask] = 0
    assert torch.all(null_mass_at_k(zero_on_null, mask, 0.25) == 0)
    only_null = torch.zeros(3, 1, 8, 4)
    only_null[mask] = torch.rand(int(mask.sum())) + 0.1
    assert torch.allclose(null_mass_at_k(only_null, mask, 0.25), torch.ones(3))


def test_to_map_signed_and_abs():
    attr = torch.tensor([[[[1.0, -2.0]], [[-3.0, 1.0]]]])  # (1, 2, 1, 2)
    assert to_map(attr, "signed").tolist() == [[[-2.0, -1.0]]]
    assert to_map(attr, "abs").tolist() == [[[4.0, 3.0]]]


@pytest.mark.parametrize("method", ["smoothgrad", "vargrad", "random"])
def test_a_set_computed_in_parts_with_offsets_is_the_set_computed_whole(method):
    """Seeded methods draw image i's noise from its position: parts of the set, each given the
    position of its first image, put together are the whole set's maps (what a job's pieces rely on)."""
    model = build_model(
        ArchSpec(name="mlp", in_shape=(1, 4, 4), num_classes=3, mean=(0.5,), std=(0.3,), widths=(8,)), seed=0
    ).eval()
    x, labels = torch.rand(11, 1, 4, 4), torch.randint(0, 3, (11,))
    cfg = SaliencyConfig(method=method, n_samples=3, batch_size=4, seed=7)
    whole = compute_saliency(model, x, labels, cfg)
    parts = [compute_saliency(model, x[a:b], labels[a:b], cfg, offset=a) for a, b in ((0, 3), (3, 9), (9, 11))]
    got = torch.cat([torch.as_tensor(p.attributions) for p in parts])
    assert torch.allclose(got, torch.as_tensor(whole.attributions), atol=1e-7)
    # without the offset the parts would repeat the first images' noise
    unshifted = compute_saliency(model, x[3:9], labels[3:9], cfg)
    assert not torch.allclose(torch.as_tensor(unshifted.attributions), torch.as_tensor(whole.attributions[3:9]))


def test_compute_saliency_reports_predictions_confidences_and_config_and_ig_alone_has_a_delta(linear):
    x = torch.rand(5, 1, 3, 4)
    with torch.no_grad():
        probs = torch.softmax(linear(x), 1)
    for method in ("gradient", "integrated_gradients"):
        cfg = SaliencyConfig(method=method, n_steps=16, batch_size=2)
        res = compute_saliency(linear, x, torch.zeros(5, dtype=torch.long), cfg)
        assert res.config is cfg and res.seconds > 0
        assert res.predictions.tolist() == probs.argmax(1).tolist() == res.targets.tolist()
        assert torch.allclose(torch.as_tensor(res.confidences), probs.max(1).values, atol=1e-6)
        assert (res.delta is None) == (method == "gradient")
    with pytest.raises(InvalidInputError, match="not a layer|unknown|conv"):
        compute_saliency(linear, x, torch.zeros(5, dtype=torch.long), SaliencyConfig(method="gradcam", layer="fc"))


def test_grad_cam_defaults_to_the_last_conv_layer_with_a_map_of_at_least_2x2():
    """Issue 22, 10: ResNet-18's layer4 is 1×1 on 32-px inputs, so Grad-CAM there is one value per image."""
    from lenscape.analysis.saliency import conv_output_sizes
    from lenscape.models.architectures import ArchSpec, build_model

    spec = ArchSpec(
        name="torchvision",
        torchvision_name="resnet18",
        in_shape=(3, 32, 32),
        num_classes=10,
        mean=(0.5,) * 3,
        std=(0.25,) * 3,
    )
    model = build_model(spec).train()
    sizes = conv_output_sizes(model, (3, 32, 32))
    assert sizes["layer4.1.conv2"] == (1, 1) and sizes["layer3.1.conv2"] == (2, 2) and sizes["conv1"] == (16, 16)
    assert suggest_gradcam_layer(model) == "layer4.1.conv2"  # the last, without a size
    assert suggest_gradcam_layer(model, (3, 32, 32)) == "layer3.1.conv2"  # the last that is 2×2 or more
    assert suggest_gradcam_layer(model, (3, 224, 224)) == "layer4.1.conv2"  # at ImageNet size, layer4 is 7×7
    assert model.training  # the probe restored the mode


def test_grad_cam_layers_of_a_vision_transformer_are_its_convolutions_and_its_blocks_layer_norms():
    """A hand-written ViT (torch's nn.MultiheadAttention): Grad-CAM can read its patch convolution and its
    blocks' LayerNorms, whose tokens make a map of patches; a CNN offers its convolutions only, and a
    transformer block without attention is not read as tokens."""
    import torch
    from torch import nn

    from lenscape.analysis.saliency import gradcam_layers, gradcam_map_sizes, suggest_gradcam_layer
    from tests import custom_nets

    vit = custom_nets.tiny_vit(depth=2, image=8, patch=2)
    names = ["patch_embed", "blocks.0.norm1", "blocks.0.norm2", "blocks.1.norm1", "blocks.1.norm2"]
    assert gradcam_layers(vit) == names and suggest_gradcam_layer(vit, (1, 8, 8)) == "blocks.1.norm1"
    assert gradcam_map_sizes(vit, (1, 8, 8)) == dict.fromkeys(names, (4, 4))  # 16 patches + the class token
    wide = custom_nets.tiny_vit(depth=1, image=12, patch=2)
    assert gradcam_map_sizes(wide, (1, 12, 12)) == dict.fromkeys(gradcam_layers(wide), (6, 6))
    vit.train()
    gradcam_map_sizes(vit, (1, 8, 8))
    assert vit.training  # left as it was found
    assert not any(h for m in vit.modules() for h in m._forward_hooks.values())  # no hook left behind

    resnet = custom_nets.residual_cnn(width=4, blocks=2)
    convs = [n for n, m in resnet.named_modules() if isinstance(m, nn.Conv2d)]
    assert gradcam_layers(resnet) == convs
    sizes = gradcam_map_sizes(resnet, (1, 8, 8))
    for name in convs:  # each convolution's own output size, measured here with a hook of the test's own
        seen = {}

        def record(module, inputs, out, seen=seen):  # returns None: the output is left as it is
            seen["hw"] = out.shape[-2:]

        handle = dict(resnet.named_modules())[name].register_forward_hook(record)
        with torch.no_grad():
            resnet(torch.zeros(1, 1, 8, 8))
        handle.remove()
        assert sizes[name] == tuple(seen["hw"])

    class NoAttention(nn.Module):  # LayerNorm but a plain MLP: not a transformer block
        def __init__(self) -> None:
            super().__init__()
            self.norm, self.fc = nn.LayerNorm(4), nn.Linear(4, 4)

        def forward(self, x):
            return x + self.fc(self.norm(x))

    class Tokens(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Conv2d(1, 4, 2, stride=2)
            self.blocks = nn.Sequential(NoAttention(), NoAttention())
            self.head = nn.Linear(4, 3)

        def forward(self, x):
            return self.head(self.blocks(self.embed(x).flatten(2).transpose(1, 2)).mean(1))

    assert gradcam_layers(Tokens()) == ["embed"]
