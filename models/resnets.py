"""CIFAR-style ResNets (ResNet-18, ResNet-9) and torchvision classifiers by name."""

from __future__ import annotations

import torch
from torch import nn

from lenscape.models.architectures import ArchSpec, ExampleTiedDropout, InputNorm
from lenscape.errors import InvalidInputError


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
        self.relu1, self.relu2 = nn.ReLU(), nn.ReLU()  # modules, not functions: Guided Backprop hooks them

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        return self.relu2(self.bn2(self.conv2(out)) + self.shortcut(x))


def _tied(spec: ArchSpec, channels: int) -> nn.Module:
    return ExampleTiedDropout(channels, spec.p_gen, spec.p_mem) if spec.tied_dropout else nn.Identity()


class ResNet18(nn.Module):
    """ResNet-18 for 32x32 inputs (3x3 stem, no max-pool). Example-tied dropout after layer2 and
    layer3, where Maini et al. put it."""

    def __init__(self, spec: ArchSpec) -> None:
        super().__init__()
        self.input_norm = InputNorm(spec.mean, spec.std)
        self.conv1 = nn.Conv2d(spec.in_shape[0], 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        widths, c_in, stages = (64, 128, 256, 512), 64, []
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(BasicBlock(c_in, w, stride), BasicBlock(w, w, 1)))
            c_in = w
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.drop2, self.drop3 = _tied(spec, 128), _tied(spec, 256)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(512, spec.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(self.input_norm(x))))
        x = self.drop2(self.layer2(self.layer1(x)))
        x = self.layer4(self.drop3(self.layer3(x)))
        return self.fc(self.flatten(self.pool(x)))


def _conv_bn(c_in: int, c_out: int, pool: bool = False) -> nn.Sequential:
    layers = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


class Residual(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.res1, self.res2 = _conv_bn(channels, channels), _conv_bn(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.res2(self.res1(x))


class ResNet9(nn.Module):
    """The DAWNBench ResNet-9 that Maini et al. use for CIFAR-10 and MNIST."""

    def __init__(self, spec: ArchSpec) -> None:
        super().__init__()
        self.input_norm = InputNorm(spec.mean, spec.std)
        self.prep = _conv_bn(spec.in_shape[0], 64)
        self.layer1 = nn.Sequential(_conv_bn(64, 128, pool=True), Residual(128))
        self.layer2 = _conv_bn(128, 256, pool=True)
        self.drop2 = _tied(spec, 256)
        self.layer3 = nn.Sequential(_conv_bn(256, 512, pool=True), Residual(512))
        self.drop3 = _tied(spec, 512)
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(512, spec.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer1(self.prep(self.input_norm(x)))
        x = self.drop3(self.layer3(self.drop2(self.layer2(x))))
        return self.fc(self.flatten(self.pool(x)))


def torchvision_classifier(spec: ArchSpec) -> nn.Module:
    """A torchvision classifier by name, without weights (loading fills them in). The
    normalization runs as a forward pre-hook, so the state_dict keeps torchvision's keys."""
    import torchvision

    try:
        model = torchvision.models.get_model(spec.torchvision_name, weights=None, num_classes=spec.num_classes)
    except (ValueError, KeyError) as exc:
        known = ", ".join(sorted(torchvision.models.list_models(torchvision.models))[:12])
        raise InvalidInputError(
            f"torchvision has no classifier {spec.torchvision_name!r} ({exc}); some it has: {known}, ..."
        ) from None
    model.add_module("input_norm", InputNorm(spec.mean, spec.std))
    model.register_forward_pre_hook(_normalized_inputs)
    return model


def timm_classifier(spec: ArchSpec) -> nn.Module:
    """A timm classifier by name (the optional extra), without weights, for the data set's channels and
    classes; normalized as torchvision's are, so the state_dict keeps timm's keys. The name is checked
    against timm's registry and its size against the server's limit before anything is built."""
    from lenscape.models.loading import check_timm_name, check_timm_size

    check_timm_name(spec.timm_name)
    kwargs = {"num_classes": spec.num_classes, "in_chans": spec.in_shape[0]}
    check_timm_size(spec.timm_name, **kwargs)
    import timm

    model = timm.create_model(spec.timm_name, pretrained=False, **kwargs)
    model.add_module("input_norm", InputNorm(spec.mean, spec.std))
    model.register_forward_pre_hook(_normalized_inputs)
    return model


CUSTOM_NORM = "_lenscape_input_norm"


def custom_classifier(spec: ArchSpec) -> nn.Module:
    """The user's own network, built from its trusted reference (models.custom), with the input
    normalization as a forward pre-hook as for torchvision's. The normalization is held as a plain
    attribute, not a child module: a user's forward may run its children in order (an nn.Sequential
    does), and a child added here would run last. Its layers keep the user's names."""
    from lenscape.models.custom import build_custom

    model = build_custom(spec.builder, spec.builder_kwargs)
    object.__setattr__(model, CUSTOM_NORM, InputNorm(spec.mean, spec.std))
    model.register_forward_pre_hook(_normalized_inputs)
    return model


def input_norm(model: nn.Module, like: torch.Tensor) -> InputNorm:
    """The model's input normalization, on `like`'s device (a custom model's is not moved by .to())."""
    norm = model.__dict__.get(CUSTOM_NORM)
    if norm is None:
        return model.input_norm
    if norm.mean.device != like.device:
        norm.to(like.device)
    return norm


def _normalized_inputs(model: nn.Module, args: tuple) -> tuple:
    """The forward pre-hook that applies the model's input normalization. Captum's DeepLift calls
    the model with (inputs, baselines) tuples, which a pre-hook of its own, registered after this
    one, concatenates: both are normalized here (an affine map, which DeepLift's rules pass exactly)."""
    if isinstance(args[0], torch.Tensor):
        return (input_norm(model, args[0])(args[0]), *args[1:])
    if len(args) >= 2 and all(isinstance(a, tuple) for a in args[:2]):
        norm = input_norm(model, args[0][0])
        return (tuple(norm(t) for t in args[0]), tuple(norm(t) for t in args[1]), *args[2:])
    raise TypeError(f"{type(model).__name__} takes a batch of images (a tensor); got a {type(args[0]).__name__}")
