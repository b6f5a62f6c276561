"""Architectures. Every model takes images in [0, 1] and normalizes inside (`input_norm`),
so attributions, traversals and attacks all work in pixel space.

Layers have stable `named_modules()` paths (conv1, relu1, fc1, layer2, ...): views address
layers by these names.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields

import torch
from torch import nn

from lenscape.errors import InvalidInputError

ARCHITECTURES = ("mlp", "cnn", "resnet18", "resnet9", "lenet", "torchvision", "timm", "custom")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclass(frozen=True, kw_only=True)
class ArchSpec:
    name: str
    in_shape: tuple[int, int, int]  # (C, H, W) of one input image
    num_classes: int
    mean: tuple[float, ...]  # per-channel normalization built into the model
    std: tuple[float, ...]
    widths: tuple[int, ...] = (256, 256)  # MLP hidden widths
    channels: tuple[int, int] = (32, 64)  # small CNN conv widths
    batchnorm: bool = False  # small CNN: BatchNorm after each conv
    p_gen: float = 0.0  # example-tied dropout; 0 = off (see ExampleTiedDropout)
    p_mem: float = 0.0
    torchvision_name: str = ""  # for name == "torchvision"
    builder: str = ""  # for name == "custom": the user's code, "module:callable" (see models.custom)
    builder_kwargs: str = ""  # its keyword arguments, canonical JSON
    timm_name: str = ""  # for name == "timm" (an optional extra); left out of to_dict() when empty

    def __post_init__(self) -> None:
        if self.name not in ARCHITECTURES:
            raise InvalidInputError(f"unknown architecture {self.name!r}; expected one of {ARCHITECTURES}")
        if len(self.in_shape) != 3 or min(self.in_shape) < 1:
            raise InvalidInputError(f"in_shape must be (C, H, W); got {self.in_shape}")
        if len(self.mean) != self.in_shape[0] or len(self.std) != self.in_shape[0]:
            raise InvalidInputError(f"mean/std need {self.in_shape[0]} channel values; got {self.mean}, {self.std}")
        if self.name == "mlp" and (not self.widths or min(self.widths) < 1):
            raise InvalidInputError(f"MLP widths must be positive integers; got {self.widths}")
        if self.p_gen or self.p_mem:
            if not (0 < self.p_gen < 1 and 0 < self.p_mem <= 1):
                raise InvalidInputError(
                    f"example-tied dropout needs 0 < p_gen < 1 and 0 < p_mem <= 1; "
                    f"got p_gen={self.p_gen}, p_mem={self.p_mem}"
                )
        if self.name == "torchvision" and not self.torchvision_name:
            raise InvalidInputError("a torchvision architecture needs a model name, e.g. 'resnet18'")
        if (self.name == "timm") != bool(self.timm_name):
            raise InvalidInputError("a timm architecture needs a model name (e.g. 'resnet18'); only timm's take one")
        if self.timm_name:  # a record or bundle may carry anything: a registry name only (models.loading)
            import re

            from lenscape.models.loading import TIMM_NAME

            if not isinstance(self.timm_name, str) or not re.fullmatch(TIMM_NAME, self.timm_name):
                raise InvalidInputError(f"{str(self.timm_name)[:80]!r} is not a timm model name")
        if self.name == "custom" or self.builder or self.builder_kwargs:
            from lenscape.models.custom import canonical_kwargs, check_ref

            if self.name != "custom":
                raise InvalidInputError(f"a {self.name} architecture takes no builder; only 'custom' does")
            check_ref(self.builder)
            object.__setattr__(self, "builder_kwargs", canonical_kwargs(self.builder_kwargs))

    def to_dict(self) -> dict:
        d = asdict(self)
        if not d["timm_name"]:  # records (and the keys computed from them) stay as they were before timm
            del d["timm_name"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ArchSpec:
        if not isinstance(d, dict):
            raise InvalidInputError(f"an architecture is a JSON object; got {type(d).__name__}")
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:  # a record from elsewhere (a bundle, a hand edit): said, not a raw TypeError
            raise InvalidInputError(f"the architecture record has fields Lenscape does not know: {unknown[:5]}")
        d = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        try:
            return cls(**d)
        except TypeError as exc:  # a required field missing
            raise InvalidInputError(f"the architecture record is incomplete: {str(exc)[:160]}") from None

    @property
    def label(self) -> str:
        """What the architecture is called where it is shown: the zoo's name, torchvision's, or the
        reference to the user's code it is built from."""
        return (
            self.torchvision_name or (f"timm {self.timm_name}" if self.timm_name else "") or self.builder or self.name
        )

    @property
    def tied_dropout(self) -> bool:
        return self.p_gen > 0


# Normalizations that architectures were published with, where they are not the data set's own
# statistics: the Captum/PyTorch CIFAR-10 tutorial LeNet was trained on (x - 0.5) / 0.5.
KNOWN_NORMALIZATION = {"lenet": (0.5, 0.5)}


def default_normalization(
    name: str, data_mean: tuple[float, ...], data_std: tuple[float, ...]
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The (mean, std) an imported model of architecture `name` most likely expects: the recipe it
    is known by, ImageNet's for torchvision classifiers on RGB, else the data set's statistics
    (what Lenscape's own training uses)."""
    c = len(data_mean)
    if name in KNOWN_NORMALIZATION:
        m, s = KNOWN_NORMALIZATION[name]
        return (m,) * c, (s,) * c
    if name in ("torchvision", "timm") and c == 3:
        return IMAGENET_MEAN, IMAGENET_STD
    return tuple(data_mean), tuple(data_std)


class InputNorm(nn.Module):
    """(x - mean) / std per channel. Buffers are not persistent, so state_dicts stay portable."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class ExampleTiedDropout(nn.Module):
    """Example-tied dropout (Maini et al. 2023, ALGORITHMS.md section 3).

    The first floor(p_gen * C) channels are always on. Each training example keeps each of the
    remaining "memorization" channels with probability p_mem, under a mask fixed by its index
    (seeded with the index, as the paper's code does), not rescaled. At test time the memorization
    channels are multiplied by p_mem; in "drop" mode they are zeroed and the generalization
    channels scaled by (p_gen + p_mem) / p_gen; in "tied" mode training examples get their own
    masks as in training (the batch's indices are needed, as in training).
    """

    def __init__(self, channels: int, p_gen: float, p_mem: float) -> None:
        super().__init__()
        self.n_gen = int(math.floor(p_gen * channels))
        self.channels, self.p_gen, self.p_mem = channels, p_gen, p_mem
        self.mode = "test"  # used in eval(): "test", "drop" or "tied"
        self.ids: torch.Tensor | None = None  # example indices of the current batch
        self._masks: dict[int, torch.Tensor] = {}

    def _mask(self, example_id: int) -> torch.Tensor:
        if example_id not in self._masks:
            gen = torch.Generator().manual_seed(example_id)
            self._masks[example_id] = torch.rand(self.channels - self.n_gen, generator=gen) < self.p_mem
        return self._masks[example_id]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C, ...) channels on dim 1
        scale = torch.ones(x.shape[0], self.channels, device=x.device, dtype=x.dtype)
        if self.training or self.mode == "tied":
            if self.ids is None or len(self.ids) != x.shape[0]:
                raise InvalidInputError(
                    "example-tied dropout needs the batch's example indices in training "
                    "and in tied mode (wrap the forward pass in `example_ids(model, idx)`)"
                )
            keep = torch.stack([self._mask(int(i)) for i in self.ids.tolist()])
            scale[:, self.n_gen :] = keep.to(scale)
        elif self.mode == "drop":
            scale[:, : self.n_gen] = (self.p_gen + self.p_mem) / self.p_gen
            scale[:, self.n_gen :] = 0.0
        else:
            scale[:, self.n_gen :] = self.p_mem
        return x * scale.view(*scale.shape, *([1] * (x.ndim - 2)))


@contextmanager
def example_ids(model: nn.Module, ids: torch.Tensor) -> Iterator[None]:
    """Tell every ExampleTiedDropout in `model` which examples the next forward pass holds."""
    layers = [m for m in model.modules() if isinstance(m, ExampleTiedDropout)]
    for m in layers:
        m.ids = ids
    try:
        yield
    finally:
        for m in layers:
            m.ids = None


class Chain(nn.Module):
    """A model whose forward pass runs its children in the order they were registered."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for module in self.children():
            x = module(x)
        return x


class MLP(Chain):
    def __init__(self, spec: ArchSpec) -> None:
        super().__init__()
        self.input_norm = InputNorm(spec.mean, spec.std)
        self.flatten = nn.Flatten()
        width = math.prod(spec.in_shape)
        for i, w in enumerate(spec.widths, start=1):
            self.add_module(f"fc{i}", nn.Linear(width, w))
            self.add_module(f"relu{i}", nn.ReLU())
            width = w
        if spec.tied_dropout:  # on the last hidden layer's units
            self.tied_dropout = ExampleTiedDropout(width, spec.p_gen, spec.p_mem)
        self.out = nn.Linear(width, spec.num_classes)


class SmallCNN(Chain):
    """conv-[BN]-ReLU-pool twice, then fc-ReLU-fc. Sized for MNIST, digits, BlockMNIST, CIFAR."""

    def __init__(self, spec: ArchSpec) -> None:
        super().__init__()
        c, h, w = spec.in_shape
        c1, c2 = spec.channels
        self.input_norm = InputNorm(spec.mean, spec.std)
        self.conv1 = nn.Conv2d(c, c1, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(c1) if spec.batchnorm else nn.Identity()
        self.relu1, self.pool1 = nn.ReLU(), nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(c2) if spec.batchnorm else nn.Identity()
        self.relu2, self.pool2 = nn.ReLU(), nn.MaxPool2d(2)
        if spec.tied_dropout:  # on the channels of the last conv block
            self.tied_dropout = ExampleTiedDropout(c2, spec.p_gen, spec.p_mem)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(c2 * (h // 4) * (w // 4), 128)
        self.relu3 = nn.ReLU()
        self.fc2 = nn.Linear(128, spec.num_classes)


class LeNet(Chain):
    """The CIFAR-10 tutorial network used in Captum's tutorials (keys conv1, conv2, fc1-fc3)."""

    def __init__(self, spec: ArchSpec) -> None:
        super().__init__()
        c, h, w = spec.in_shape
        self.input_norm = InputNorm(spec.mean, spec.std)
        self.conv1, self.relu1, self.pool1 = nn.Conv2d(c, 6, 5), nn.ReLU(), nn.MaxPool2d(2)
        self.conv2, self.relu2, self.pool2 = nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        h2, w2 = ((h - 4) // 2 - 4) // 2, ((w - 4) // 2 - 4) // 2  # two 5x5 valid convs, two 2x2 pools
        self.fc1, self.relu3 = nn.Linear(16 * h2 * w2, 120), nn.ReLU()
        self.fc2, self.relu4 = nn.Linear(120, 84), nn.ReLU()
        self.fc3 = nn.Linear(84, spec.num_classes)


def build_model(spec: ArchSpec, seed: int | None = None) -> nn.Module:
    """A freshly initialized model for `spec`: with `seed`, its initial weights depend on the seed
    alone (drawn from a generator, not the global RNG other jobs share; see models.seeding)."""
    from lenscape.models.resnets import ResNet9, ResNet18, custom_classifier, timm_classifier, torchvision_classifier
    from lenscape.models.seeding import _GLOBAL_RNG, generator, global_seed, init_parameters

    builders = {
        "mlp": MLP,
        "cnn": SmallCNN,
        "lenet": LeNet,
        "resnet18": ResNet18,
        "resnet9": ResNet9,
        "torchvision": torchvision_classifier,
        "timm": timm_classifier,
        "custom": custom_classifier,
    }
    if spec.name in ("torchvision", "timm", "custom") and seed is not None:  # keeps the library's own initialization
        with global_seed(seed):
            model = builders[spec.name](spec)
    else:
        # constructors draw from the global RNG: never inside another's seeded window, and the
        # global state is left as it was (a build neither reads nor moves it for anyone else)
        with _GLOBAL_RNG, torch.random.fork_rng(devices=[]):
            model = builders[spec.name](spec)
        if seed is not None:
            init_parameters(model, generator(seed))
    check_io(model, spec)
    return model


def check_io(model: nn.Module, spec: ArchSpec) -> None:
    """Run one dummy image through; the output must have one logit per class."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, *spec.in_shape))
    except (RuntimeError, AssertionError, ValueError) as exc:  # libraries assert their input size (timm's ViTs)
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise InvalidInputError(
            f"this {spec.label} model cannot take images of shape {spec.in_shape} (C, H, W): {first}. Models "
            "with a fixed input size (vision transformers) need images of that size: open an image folder at it"
        ) from None
    finally:
        model.train(was_training)
    if out.shape != (1, spec.num_classes):
        raise InvalidInputError(
            f"the model gives {tuple(out.shape[1:])} outputs per image but the data set has {spec.num_classes} classes"
        )
