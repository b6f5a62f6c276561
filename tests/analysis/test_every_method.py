"""Issue 22, 10: every attribution method runs on every architecture Lenscape offers (MLP, CNN,
LeNet, ResNet-9/18 with and without example-tied dropout, a torchvision classifier by name) and
gives finite maps of the input's shape, with settings small enough to take seconds."""

import numpy as np
import pytest
import torch

from lenscape.analysis.saliency import METHODS, SaliencyConfig, compute_saliency, suggest_gradcam_layer
from lenscape.models.architectures import ArchSpec, build_model

TIED = dict(p_gen=0.4, p_mem=0.2)
ARCHS = {
    "mlp": dict(name="mlp", widths=(16,), in_shape=(1, 8, 8)),
    "mlp-tied": dict(name="mlp", widths=(16,), in_shape=(1, 8, 8), **TIED),
    "cnn": dict(name="cnn", channels=(4, 8), in_shape=(1, 8, 8)),
    "cnn-bn-tied": dict(name="cnn", channels=(4, 8), batchnorm=True, in_shape=(1, 8, 8), **TIED),
    "lenet": dict(name="lenet", in_shape=(3, 32, 32)),
    "resnet9": dict(name="resnet9", in_shape=(3, 32, 32)),
    "resnet18-tied": dict(name="resnet18", in_shape=(3, 32, 32), **TIED),
    "torchvision-resnet18": dict(name="torchvision", torchvision_name="resnet18", in_shape=(3, 32, 32)),
}
SMALL = dict(n_steps=4, n_samples=2, window=8, stride=8, target="true")


@pytest.fixture(scope="module", params=list(ARCHS))
def model(request):
    fields = ARCHS[request.param]
    c = fields["in_shape"][0]
    torch.manual_seed(0)
    return request.param, build_model(ArchSpec(**fields, num_classes=10, mean=(0.4,) * c, std=(0.25,) * c)).eval()


@pytest.mark.parametrize("method", METHODS)
def test_every_method_runs_on_every_architecture(model, method):
    name, net = model
    shape = ARCHS[name]["in_shape"]
    x, y = torch.rand(2, *shape, generator=torch.Generator().manual_seed(1)), torch.tensor([3, 7])
    layer = None
    if method == "gradcam":
        if name.startswith("mlp"):
            with pytest.raises(Exception, match="no convolutional layer"):
                suggest_gradcam_layer(net)
            return
        layer = suggest_gradcam_layer(net, shape)
    res = compute_saliency(net, x, y, SaliencyConfig(method=method, layer=layer, **SMALL))
    channels = 1 if method == "gradcam" else shape[0]
    assert res.attributions.shape == (2, channels, *shape[1:]), (name, method)
    assert np.isfinite(res.attributions).all(), (name, method)
    assert method == "random" or np.abs(res.attributions).sum() > 0, (name, method)  # not a blank map
