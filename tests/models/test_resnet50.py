"""ImageNet-sized models (issue 25): a torchvision ResNet-50 (random weights here, no network) on
224-px images. Every saliency method gives a finite (1, 3, 224, 224) map, Captum's Saliency agrees
with the gradient one, a level-set walk stays at the source's confidence, and CKA between two of its
stages is computed, in a few seconds of CPU each (one image; few steps)."""

from __future__ import annotations

import pytest
import torch

from lenscape.analysis import (
    METHODS,
    LSTConfig,
    SaliencyConfig,
    attribute,
    extract,
    hidden_layers,
    level_set_traversal,
    linear_cka,
    suggest_gradcam_layer,
)


@pytest.fixture(scope="module")
def resnet50():
    from lenscape.models.architectures import IMAGENET_MEAN, IMAGENET_STD, ArchSpec, build_model

    spec = ArchSpec(
        name="torchvision",
        torchvision_name="resnet50",
        in_shape=(3, 224, 224),
        num_classes=1000,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    )
    torch.manual_seed(0)
    return build_model(spec, seed=0).eval()


def _images(n: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    low = torch.rand(n, 3, 14, 14, generator=g)  # smooth images: what a photo's pixels look like to a CNN
    return torch.nn.functional.interpolate(low, size=224, mode="bilinear", align_corners=False)


@pytest.mark.parametrize("method", METHODS)
def test_every_saliency_method_on_resnet50_at_224_px(resnet50, method):
    import captum.attr as ca

    x = _images(1)
    with torch.no_grad():
        target = resnet50(x).argmax(1)
    cfg = SaliencyConfig(
        method=method,
        n_steps=4,
        n_samples=3,
        window=56,
        stride=56,
        layer=suggest_gradcam_layer(resnet50, (3, 224, 224)) if method == "gradcam" else None,
    )
    attr = attribute(resnet50, x, target, cfg)
    assert attr.shape == ((1, 1, 224, 224) if method == "gradcam" else (1, 3, 224, 224))
    assert torch.isfinite(attr).all() and attr.abs().sum() > 0
    if method == "gradient":
        torch.testing.assert_close(attr, ca.Saliency(resnet50).attribute(x, target=target, abs=False))
    if method == "gradcam":
        assert cfg.layer == "layer4.2.conv3"  # 7×7 maps at 224 px


def test_a_level_set_walk_on_resnet50_at_224_px(resnet50):
    x, target = _images(2)[:1], _images(2)[1:]
    with torch.no_grad():
        label = resnet50(x).argmax(1)
    res = level_set_traversal(resnet50, x, label, target, LSTConfig(steps=3, eta=0.05, log_every=1))
    final = torch.as_tensor(res.output)
    assert final.shape == (1, 3, 224, 224) and torch.isfinite(final).all()
    assert res.dist_l2[-1, 0] < res.dist_l2[0, 0]  # it walked toward the target
    assert res.confidence[-1, 0] >= res.p0[0] - 0.05 - 1e-6  # within δ of the source's confidence


def test_cka_between_two_stages_of_resnet50(resnet50):
    layers = hidden_layers(resnet50)
    assert layers == ["relu", "layer1", "layer2", "layer3", "layer4", "fc"]
    acts = extract(resnet50, _images(8), ["layer3", "layer4"], batch_size=4)
    value = linear_cka(acts["layer3"], acts["layer4"])
    assert 0 < value <= 1 and linear_cka(acts["layer4"], acts["layer4"]) == pytest.approx(1.0, abs=1e-5)
