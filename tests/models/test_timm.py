"""timm's classifiers by name (the optional extra, issue 25): built without weights for the data set's
channels and classes, their recipe read from timm's pretrained_cfg without a download, imported from a
weights file, and rebuilt from the record. Records of the other architectures are unchanged by it."""

from __future__ import annotations

import pytest
import torch

from lenscape.errors import InvalidInputError
from lenscape.models.architectures import ArchSpec, build_model
from lenscape.models.checkpoints import model_fingerprint

timm = pytest.importorskip("timm")

DIGITS = dict(in_shape=(1, 8, 8), num_classes=10, mean=(0.5,), std=(0.5,))


def test_the_recipe_is_timm_s_pretrained_cfg_with_imagenet_s_names():
    from lenscape.models.loading import timm_recipe

    cfg = timm.models.get_pretrained_cfg("resnet50")
    recipe = timm_recipe("resnet50")
    assert recipe.weights == f"timm resnet50.{cfg.tag}"
    assert (recipe.image_size, recipe.mean, recipe.std) == (cfg.input_size[1], cfg.mean, cfg.std)
    assert recipe.resize == round(cfg.input_size[1] / cfg.crop_pct)  # 224 / 0.95: 236
    assert len(recipe.classes) == 1000 and recipe.classes[0].startswith("tench")
    assert recipe.classes[1].startswith("goldfish") and recipe.classes[999].startswith("toilet tissue")
    vit = timm_recipe("vit_base_patch16_384")
    assert vit.image_size == 384 and vit.mean == (0.5, 0.5, 0.5)
    with pytest.raises(InvalidInputError, match="no classifier 'not_a_model'"):
        timm_recipe("not_a_model")


def test_a_timm_model_is_built_for_the_data_and_rebuilt_from_its_record():
    spec = ArchSpec(name="timm", timm_name="resnet18", **DIGITS)
    model = build_model(spec, seed=3)
    again = build_model(ArchSpec.from_dict(spec.to_dict()), seed=3)
    assert model_fingerprint(again) == model_fingerprint(model)  # same seed, same weights
    assert model_fingerprint(build_model(spec, seed=4)) != model_fingerprint(model)
    assert model.eval()(torch.rand(2, 1, 8, 8)).shape == (2, 10)
    assert "conv1" in dict(model.named_modules())  # timm's own layer names
    assert "input_norm.mean" not in model.state_dict()  # timm's keys only
    assert spec.to_dict()["timm_name"] == "resnet18" and spec.label == "timm resnet18"
    # every other architecture's record (and so every stored key) is as it was before timm
    assert "timm_name" not in ArchSpec(name="mlp", **DIGITS).to_dict()
    # the normalization is applied inside: the same as timm's network on normalized pixels
    x = torch.rand(1, 1, 8, 8)
    plain = timm.create_model("resnet18", pretrained=False, num_classes=10, in_chans=1).eval()
    plain.load_state_dict(model.state_dict())
    torch.testing.assert_close(model(x), plain((x - 0.5) / 0.5))


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"name": "timm"}, "needs a model name"),
        ({"name": "mlp", "timm_name": "resnet18"}, "only timm's take one"),
    ],
)
def test_a_timm_record_needs_its_name_and_only_it_has_one(fields, message):
    with pytest.raises(InvalidInputError, match=message):
        ArchSpec(**fields, **DIGITS)


def test_an_unknown_name_is_said_and_downloads_off_are_said():
    from lenscape.models.loading import timm_pretrained

    with pytest.raises(InvalidInputError, match="'os.system' is not a timm model name"):
        build_model(ArchSpec(name="timm", timm_name="os.system", **DIGITS))
    with pytest.raises(InvalidInputError, match="timm has no classifier 'no_such_net'"):
        build_model(ArchSpec(name="timm", timm_name="no_such_net", **DIGITS))
    with pytest.raises(InvalidInputError, match="downloads are off"):
        timm_pretrained("resnet18")


def test_grad_cam_reads_a_vision_transformer_s_tokens_as_a_map_of_patches():
    """timm's ViT (its own Attention class and LayerNorm subclass; tests/analysis/test_saliency.py has a
    hand-written one): the layers Grad-CAM can read are the convolution and the blocks' LayerNorms, the
    suggested one the last block's first LayerNorm, and its map the grid of patches."""
    from lenscape.analysis.saliency import SaliencyConfig, compute_saliency, gradcam_layers, gradcam_map_sizes
    from lenscape.analysis.saliency import suggest_gradcam_layer

    torch.manual_seed(0)
    vit = timm.create_model(
        "vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8, depth=2, num_classes=10
    ).eval()
    assert suggest_gradcam_layer(vit, (3, 32, 32)) == "blocks.1.norm1"
    layers = gradcam_layers(vit)
    assert layers == ["patch_embed.proj", "blocks.0.norm1", "blocks.0.norm2", "blocks.1.norm1", "blocks.1.norm2"]
    assert gradcam_map_sizes(vit, (3, 32, 32)) == dict.fromkeys(layers, (4, 4))
    x = torch.rand(3, 3, 32, 32)
    res = compute_saliency(vit, x, vit(x).argmax(1), SaliencyConfig(method="gradcam", layer="blocks.1.norm1"))
    assert res.attributions.shape == (3, 1, 32, 32) and float(abs(res.attributions).sum()) > 0


@pytest.mark.parametrize("name", ["local-dir:/tmp", "hf-hub:someone/big-model", "resnet50.a1_in1k", "../resnet50", ""])
def test_a_name_timm_would_read_as_a_source_is_refused_before_timm_sees_it(name, monkeypatch):
    """timm reads "local-dir:/path" as a folder of this machine and "hf-hub:owner/repo" as any repository:
    a page user's typed name must be a registry name, checked before any timm call (downloads on here)."""
    from lenscape.models import loading

    monkeypatch.setenv("LENSCAPE_OFFLINE", "0")
    seen = []
    monkeypatch.setattr(timm, "create_model", lambda *a, **k: seen.append(a) or pytest.fail("timm was called"))
    for call in (loading.timm_pretrained, loading.timm_recipe):
        with pytest.raises(InvalidInputError, match="not a timm model name|needs a model name"):
            call(name)
    with pytest.raises(InvalidInputError, match="not a timm model name|needs a model name"):
        ArchSpec(name="timm", timm_name=name, **DIGITS)
    assert seen == []


def test_a_timm_model_over_the_server_s_parameter_limit_is_refused_before_it_is_built(monkeypatch):
    """Counted on the meta device (nothing allocated): resnet18's 11 M parameters against a 1 M limit."""
    monkeypatch.setenv("LENSCAPE_MAX_MODEL_PARAMS", "1_000_000")
    with pytest.raises(InvalidInputError, match=r"resnet18 has 11,\d{3},\d{3} parameters, over this server's limit"):
        build_model(ArchSpec(name="timm", timm_name="resnet18", **DIGITS))
    monkeypatch.setenv("LENSCAPE_MAX_MODEL_PARAMS", "20_000_000")
    assert build_model(ArchSpec(name="timm", timm_name="resnet18", **DIGITS)) is not None


def test_a_vision_transformer_at_another_image_size_is_said_and_windowed_attention_keeps_its_convolutions():
    """timm's ViTs assert their input size: said as such, not "failed unexpectedly". Swin's windowed
    attention works on 4-D maps, so Grad-CAM keeps to its convolution there (its token reading crashed)."""
    from lenscape.analysis.saliency import SaliencyConfig, compute_saliency, conv_layers, suggest_gradcam_layer

    with pytest.raises(InvalidInputError, match="cannot take images of shape .*fixed input size"):
        build_model(ArchSpec(name="timm", timm_name="vit_tiny_patch16_224", **DIGITS))
    swin = timm.create_model(
        "swin_tiny_patch4_window7_224", pretrained=False, num_classes=3, depths=(1, 1, 1, 1)
    ).eval()
    layer = suggest_gradcam_layer(swin, (3, 224, 224))
    assert layer in conv_layers(swin)
    x = torch.rand(1, 3, 224, 224)
    res = compute_saliency(swin, x, torch.tensor([0]), SaliencyConfig(method="gradcam", layer=layer))
    assert res.attributions.shape == (1, 1, 224, 224)
