"""Layer pickers of a large model (issue 25): a torchvision ResNet-18 added with lenscape.add_model has
over 60 modules. The Similarity page lists its blocks first, a block's layers on request, and keeps
what is chosen listed."""

from __future__ import annotations

import torch
from streamlit.testing.v1 import AppTest

from apphelpers import ROOT


class Colours(torch.utils.data.Dataset):
    """40 small RGB images of 4 classes (each class its own tint), as a user's own data set."""

    classes = ("red", "green", "blue", "grey")

    def __init__(self, size: int = 32) -> None:
        g = torch.Generator().manual_seed(0)
        self.y = torch.arange(40) % 4
        tint = torch.tensor([[1, 0.2, 0.2], [0.2, 1, 0.2], [0.2, 0.2, 1], [0.6, 0.6, 0.6]])
        self.x = (tint[self.y][:, :, None, None] * torch.rand(40, 1, size, size, generator=g)).clamp(0, 1)

    def __len__(self) -> int:
        return 40

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


def test_a_large_model_s_layers_are_listed_by_block():
    import torchvision

    import lenscape

    net = torchvision.models.resnet18(num_classes=4)
    run_id = lenscape.add_model(
        net, Colours(), name="resnet18 of mine", architecture="torchvision.models:resnet18", kwargs={"num_classes": 4}
    )
    at = AppTest.from_file(str(ROOT / "pages" / "5_Similarity.py"), default_timeout=120)
    at.query_params["model"] = run_id
    at.run()
    assert not at.exception, at.exception
    (group, _) = [s for s in at.selectbox if s.label.startswith("Layers listed")]
    assert group.label == f"Layers listed ({len([n for n, _ in net.named_modules() if n])} in all)"
    picker = [m for m in at.multiselect if m.label == "Layers of A"][0]
    assert picker.value == ["relu", "layer1", "layer2", "layer3", "layer4", "fc"]  # the hidden layers
    assert "layer1.0" in picker.options and "layer1.0.conv1" not in picker.options  # two levels down
    group.set_value("layer3").run()
    picker = [m for m in at.multiselect if m.label == "Layers of A"][0]
    assert "layer3.1.conv2" in picker.options and "layer2.0.conv1" not in picker.options
    assert set(picker.value) <= set(picker.options)  # what is chosen stays listed
    picker.set_value([*picker.value, "layer3.1.conv2"]).run()
    assert not at.exception
    group = [s for s in at.selectbox if s.label.startswith("Layers listed")][0]
    group.set_value("layer1").run()
    picker = [m for m in at.multiselect if m.label == "Layers of A"][0]
    assert "layer3.1.conv2" in picker.value and "layer3.1.conv2" in picker.options


def test_a_large_model_on_a_cpu_starts_the_saliency_grid_with_the_gradient_alone():
    """ResNet-18 at 64 px (11M parameters × 4,096 pixels): IG and SmoothGrad would take minutes on a CPU, so
    the Maps tab starts with the gradient and says why; at 32 px the usual three methods stay."""
    import torchvision

    import lenscape

    methods = {}
    for size in (32, 64):
        net = torchvision.models.resnet18(num_classes=4)
        run_id = lenscape.add_model(
            net,
            Colours(size),
            name=f"resnet18 at {size}",
            architecture="torchvision.models:resnet18",
            kwargs={"num_classes": 4},
        )
        at = AppTest.from_file(str(ROOT / "pages" / "2_Saliency.py"), default_timeout=120)
        at.query_params["model"] = run_id
        at.run()
        assert not at.exception, at.exception
        methods[size] = at.multiselect(key="sal.browse.methods").value
        said = " ".join(c.value for c in at.caption)
        assert ("gradient alone" in said) == (size == 64), said[:300]
    assert methods == {32: ["gradient", "integrated_gradients", "smoothgrad"], 64: ["gradient"]}
