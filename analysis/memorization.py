"""Where mislabeled training examples are memorized (Maini et al. 2023, "Can Neural Network
Memorization Be Localized?"; ALGORITHMS.md section 3): gradient accounting, layer rewinding,
layer retraining, greedy neuron flipping, and example-tied dropout's kept/dropped accuracies.

Where the official code departs from the paper, the paper's semantics are followed: retraining
freezes every other layer and trains on the clean examples; flipping removes neurons (a conv output
channel or a linear output unit, weights and bias), analyses every example with a batch of its own,
and has a cap on steps and on the accuracy it may cost.

Images are uint8 (N, C, H, W) or floats in [0, 1]; the model normalizes inside.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypedDict

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lenscape.analysis.evaluation import Progress, _no_progress, evaluate, frozen_parameters
from lenscape.errors import InvalidInputError


def _float(images: torch.Tensor, device) -> torch.Tensor:
    x = images.to(device)
    return x.float().div(255) if x.dtype == torch.uint8 else x.float()


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)
GROUPINGS = ("paper", "layer", "block", "module")
GROUPING_HELP = {
    "paper": "as the paper: a ResNet-18/50 by stage (stem, layer1…layer4, fc), any other model by layer",
    "layer": "a convolution or linear layer together with the normalization that follows it",
    "block": "each top-level block of the model (a ResNet's stages), its stem conv with its BatchNorm",
    "module": "every module that owns parameters on its own (a conv and its BatchNorm apart)",
}


def _module_params(model: nn.Module) -> dict[str, list[str]]:
    """Module name → the names of the parameters it owns directly, in the model's order."""
    groups: dict[str, list[str]] = {}
    for name, _ in model.named_parameters():
        groups.setdefault(name.rsplit(".", 1)[0] if "." in name else "", []).append(name)
    return groups


def _follows(norm: nn.Module, layer: nn.Module) -> bool:
    """`norm` normalizes `layer`'s output: a norm layer with as many features as `layer` has outputs."""
    if not isinstance(norm, NORMS) or not isinstance(layer, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
        return False
    outputs = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
    width = (
        norm.num_features
        if isinstance(norm, nn.modules.batchnorm._BatchNorm)
        else norm.num_channels
        if isinstance(norm, nn.GroupNorm)
        else math.prod(norm.normalized_shape)
    )
    return width == outputs


def _joined(a: str, b: str) -> str:
    """The name of a unit of two modules: 'conv1+bn1', 'layer1.0.conv1+bn1'."""
    pa, _, _ = a.rpartition(".")
    pb, _, tail = b.rpartition(".")
    return f"{a}+{tail}" if pa == pb else f"{a}+{b}"


def paper_grouping(model: nn.Module) -> str:
    """The grouping the paper's code uses for this model: ResNets with basic or bottleneck blocks by
    stage (its ResNet-50: 6 groups), any other model by layer (its ResNet-9: 9 groups)."""
    blocks = any(type(m).__name__ in ("BasicBlock", "Bottleneck") for m in model.modules())
    return "block" if blocks else "layer"


def layer_groups(model: nn.Module, by: str = "paper") -> dict[str, list[str]]:
    """Group name → the names of its parameters, in the model's order: the "layers" the experiments
    rewind, retrain and account for. `by` (GROUPINGS):
    - "layer": a conv or linear layer with the normalization layer right after it ('conv1+bn1'; in
      a ResNet-9, 'prep' or 'layer1.1.res1' where a Sequential holds just the two);
    - "block": the model's top-level children ('layer1' … 'layer4' of a ResNet), top-level layers
      grouped as in "layer" (the stem 'conv1+bn1', 'fc');
    - "module": each module that owns parameters on its own (conv1, bn1, ...);
    - "paper": what the paper's code does for this model (paper_grouping).

    Args:
        model: the network.
        by: "paper" (default), "layer", "block" or "module" (see above).

    Returns:
        {group name: [parameter names]}, in the model's order; every parameter is in exactly one group.

    Example:
        >>> from lenscape.analysis import layer_groups
        >>> from lenscape.models.architectures import ArchSpec, build_model
        >>> cnn = build_model(ArchSpec(name="cnn", in_shape=(1, 8, 8), num_classes=3, mean=(0.5,), std=(0.5,),
        ...                            channels=(4, 6), batchnorm=True), seed=0)
        >>> groups = layer_groups(cnn)                  # not a ResNet: by layer, each conv with its BatchNorm
        >>> list(groups), groups["conv1+bn1"]
        (['conv1+bn1', 'conv2+bn2', 'fc1', 'fc2'], ['conv1.weight', 'conv1.bias', 'bn1.weight', 'bn1.bias'])
        >>> list(layer_groups(cnn, by="module"))
        ['conv1', 'bn1', 'conv2', 'bn2', 'fc1', 'fc2']
    """
    if by not in GROUPINGS:
        raise InvalidInputError(f"grouping must be one of {GROUPINGS}; got {by!r}")
    if by == "paper":
        by = paper_grouping(model)
    owned = _module_params(model)
    if by == "module":
        return owned
    modules = dict(model.named_modules())
    units: list[tuple[list[str], list[str]]] = []  # (module names, parameter names)
    for name, params in owned.items():
        if units and len(units[-1][0]) == 1 and _follows(modules[name], modules[units[-1][0][0]]):
            units[-1][0].append(name)
            units[-1][1].extend(params)
        else:
            units.append(([name], list(params)))
    groups: dict[str, list[str]] = {}
    for names, params in units:
        key = names[0] if len(names) == 1 else _joined(*names)
        if len(names) == 2:
            parent = names[0].rpartition(".")[0]
            if parent and set(_owned_by(owned, parent)) == set(params):
                key = parent  # a Sequential that holds just the two: its name
        if by == "block" and "." in names[0]:
            key = names[0].split(".", 1)[0]
        groups.setdefault(key, []).extend(params)
    return groups


def _owned_by(owned: dict[str, list[str]], prefix: str) -> list[str]:
    """Every parameter of the modules at or under `prefix`."""
    return [p for m, ps in owned.items() if m == prefix or m.startswith(prefix + ".") for p in ps]


def neuron_layers(model: nn.Module) -> list[tuple[str, nn.Conv2d | nn.Linear]]:
    """The layers whose output units are "neurons" for flipping: convolutions (an output channel)
    and linear layers (an output unit), in the model's order, without the classifier (the last
    layer): its units are the class scores themselves, and removing the label's would flip any
    example in one step whatever the network had learnt about it."""
    layers = [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    return layers[:-1]


def neuron_units(layers: Sequence[tuple[str, nn.Conv2d | nn.Linear]]) -> list[int]:
    """How many neurons each of `layers` has: output channels or output units."""
    return [m.out_channels if isinstance(m, nn.Conv2d) else m.out_features for _, m in layers]


# ---------------------------------------------------------------------------------------------
# Gradient accounting


def split_backward(
    losses: torch.Tensor, noisy: torch.Tensor, params: Sequence[torch.Tensor], retain_graph: bool = False
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(g_clean, g_noisy) of one batch's per-example `losses`: the gradients of Σ_C ℓ / |B| and
    Σ_N ℓ / |B| (= (|C|/|B|)·mean_C ℓ and (|N|/|B|)·mean_N ℓ), which add up to the gradient of the
    batch's mean loss. An empty part, or a parameter the loss does not reach, gets zeros."""
    b = len(losses)
    parts = []
    for k, sel in enumerate((~noisy, noisy)):
        if sel.any():
            g = torch.autograd.grad(
                losses[sel].sum() / b, params, allow_unused=True, retain_graph=retain_graph or k == 0
            )
            parts.append([torch.zeros_like(p) if gi is None else gi for gi, p in zip(g, params)])
        else:
            parts.append([torch.zeros_like(p) for p in params])
    return parts[0], parts[1]


def split_gradients(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, noisy: torch.Tensor, ids: torch.Tensor | None = None
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(g_clean, g_noisy), one tensor per parameter, for one batch (see split_backward)."""
    from lenscape.models.architectures import example_ids

    with example_ids(model, ids if ids is not None else torch.arange(len(labels))):
        losses = F.cross_entropy(model(images), labels, reduction="none")
    return split_backward(losses, noisy, list(model.parameters()))


@dataclass(frozen=True, kw_only=True)
class ParamGradients:
    """Clean and noisy gradients summed over an epoch, per parameter tensor p: ‖G_clean,p‖,
    ‖G_noisy,p‖ and cos(G_clean,p, G_noisy,p) (0 where either is zero)."""

    names: list[str]
    numel: np.ndarray  # (P,)
    clean_norm: np.ndarray  # (P,)
    noisy_norm: np.ndarray  # (P,)
    cosine: np.ndarray  # (P,)

    @classmethod
    def of(cls, names: list[str], clean: list[torch.Tensor], noisy: list[torch.Tensor]) -> ParamGradients:
        cos = [
            float(F.cosine_similarity(c.flatten().double(), n.flatten().double(), dim=0, eps=1e-300))
            for c, n in zip(clean, noisy)
        ]
        return cls(
            names=list(names),
            numel=np.array([c.numel() for c in clean]),
            clean_norm=np.array([float(c.double().norm()) for c in clean]),
            noisy_norm=np.array([float(n.double().norm()) for n in noisy]),
            cosine=np.array(cos),
        )


@dataclass(frozen=True, kw_only=True)
class GradientAccount:
    groups: list[str]
    clean_norm: np.ndarray  # (G,) Σ_p ‖G_clean,p‖ / √numel(p) over the group's parameters
    noisy_norm: np.ndarray  # (G,)
    cosine: np.ndarray  # (G,) cos(G_clean,p, G_noisy,p), averaged over the group's parameters


def group_account(stats: ParamGradients, groups: dict[str, list[str]]) -> GradientAccount:
    """Per-parameter figures gathered into layer groups as the paper's code does
    (experiments/gradients.py): norms over √numel summed, cosines averaged."""
    index = {n: i for i, n in enumerate(stats.names)}
    missing = [p for ps in groups.values() for p in ps if p not in index]
    if missing:
        raise InvalidInputError(f"no gradients recorded for parameters {missing[:4]}")
    rows = [[index[p] for p in ps] for ps in groups.values()]
    scale = np.sqrt(stats.numel.astype(float))
    return GradientAccount(
        groups=list(groups),
        clean_norm=np.array([float(np.sum(stats.clean_norm[r] / scale[r])) for r in rows]),
        noisy_norm=np.array([float(np.sum(stats.noisy_norm[r] / scale[r])) for r in rows]),
        cosine=np.array([float(np.mean(stats.cosine[r])) for r in rows]),
    )


class GradientRecorder:
    """The paper's gradient accounting inside a training loop (its train.py): each batch's clean and
    noisy gradients are summed over the epoch while the weights move. `step_gradients` replaces
    `loss.backward()`: it leaves g_clean + g_noisy (the batch's mean-loss gradient) in each
    parameter's .grad for the optimizer; `close_epoch` returns the epoch's ParamGradients and starts
    the next sum."""

    def __init__(self, model: nn.Module) -> None:
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        self._reset()

    def _reset(self) -> None:
        self.clean = [torch.zeros_like(p, dtype=torch.float64) for p in self.params]
        self.noisy = [torch.zeros_like(p, dtype=torch.float64) for p in self.params]

    def step_gradients(self, losses: torch.Tensor, noisy: torch.Tensor) -> None:
        gc, gn = split_backward(losses, noisy, self.params)
        for p, sc, sn, c, n in zip(self.params, self.clean, self.noisy, gc, gn):
            sc += c
            sn += n
            p.grad = c + n

    def close_epoch(self) -> ParamGradients:
        stats = ParamGradients.of(self.names, self.clean, self.noisy)
        self._reset()
        return stats


def gradient_account(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    noisy: torch.Tensor,
    batch_size: int = 512,
    progress: Progress = _no_progress,
    grouping: str = "paper",
) -> GradientAccount:
    """The checkpoint version: clean and noisy examples' gradients summed over one pass of the
    training set in its order at fixed weights (batches of `batch_size`, the model in training
    mode as in training; BatchNorm's running statistics are left untouched: a copy of the model is
    used). The paper sums while the epoch trains instead (GradientRecorder); the two agree only
    once the learning rate has decayed.

    Args:
        model: the network at the checkpoint (a copy is used; the model itself is not changed).
        images: (N, C, H, W) the training set in its training order, uint8 or floats in [0, 1].
        labels: (N,) the labels trained on (the noisy ones included).
        noisy: (N,) bool, True for the mislabeled examples.
        batch_size: examples per batch, as in training (each batch's gradients are of its mean loss).
        progress: ``progress(fraction, message)``, called after each batch.
        grouping: how parameters form layers: "paper" (default), "layer", "block" or "module" (`layer_groups`).

    Returns:
        A GradientAccount per group: the clean and noisy gradients' norms (Σ over the group's parameters of
        ‖G‖ / √numel) and their mean cosine.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from lenscape.analysis import gradient_account
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        >>> images, labels = torch.rand(4, 1, 4, 4).repeat(2, 1, 1, 1), torch.tensor([0, 1, 2, 0]).repeat(2)
        >>> noisy = torch.arange(8) >= 4        # the "noisy" half is an exact copy of the clean half
        >>> acc = gradient_account(net, images, labels, noisy)
        >>> acc.groups, acc.cosine.round(4), bool(acc.clean_norm[0] == acc.noisy_norm[0])
        (['1'], array([1.]), True)
        >>> flipped = torch.cat([labels[:4], (labels[4:] + 1) % 3])       # the copies now mislabeled
        >>> bool(gradient_account(net, images, flipped, noisy).cosine[0] < 0)   # they pull the other way
        True
    """
    if noisy.dtype != torch.bool or len(noisy) != len(labels):
        raise InvalidInputError("the noise mask must be a boolean tensor with one entry per training example")
    model = copy.deepcopy(model).train()
    device = _device(model)
    groups = layer_groups(model, grouping)
    names = [n for n, _ in model.named_parameters()]
    sums_c = [torch.zeros_like(p, dtype=torch.float64) for p in model.parameters()]
    sums_n = [torch.zeros_like(p, dtype=torch.float64) for p in model.parameters()]
    n = len(labels)
    steps = math.ceil(n / batch_size)
    for b in range(steps):
        sl = slice(b * batch_size, min(n, (b + 1) * batch_size))
        gc, gn = split_gradients(
            model, _float(images[sl], device), labels[sl].to(device), noisy[sl].to(device), torch.arange(n)[sl]
        )
        for s, g in zip(sums_c, gc):
            s += g
        for s, g in zip(sums_n, gn):
            s += g
        progress((b + 1) / steps, f"batch {b + 1}/{steps}")
    return group_account(ParamGradients.of(names, sums_c, sums_n), groups)


# ---------------------------------------------------------------------------------------------
# Accuracy on named sets, rewinding, retraining


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1024) -> float:
    """Eval-mode accuracy of `model` on (images, labels); nan for an empty set."""
    return evaluate(model, images, labels, batch_size=batch_size).accuracy if len(labels) else float("nan")


def rewound(
    final: dict[str, torch.Tensor], early: dict[str, torch.Tensor], params: list[str]
) -> dict[str, torch.Tensor]:
    """The final state with the parameters `params` (not BatchNorm's buffers) taken from `early`.

    Args:
        final: the state dict at the end of training.
        early: the state dict to rewind to (an earlier checkpoint of the same architecture).
        params: the names to take from `early` (a group of `layer_groups`); both must hold them.

    Returns:
        A new state dict (its tensors shared with the two, not copied); neither input is changed.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from lenscape.analysis import rewound
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
        >>> early = {k: v.clone() for k, v in net.state_dict().items()}
        >>> with torch.no_grad():
        ...     _ = net[1].weight.add_(1.0), net[1].bias.add_(1.0)      # "training"
        >>> final = net.state_dict()
        >>> state = rewound(final, early, ["1.weight"])
        >>> torch.equal(state["1.weight"], early["1.weight"]), torch.equal(state["1.bias"], final["1.bias"])
        (True, True)
        >>> all(torch.equal(v, early[k]) for k, v in rewound(final, early, list(early)).items())   # all of them
        True
    """
    missing = [p for p in params if p not in final or p not in early]
    if missing:
        raise InvalidInputError(f"parameters {missing} are not in both checkpoints")
    state = dict(final)
    for p in params:
        state[p] = early[p]
    return state


@dataclass(frozen=True, kw_only=True)
class RetrainConfig:
    lr: float = 0.01  # peak of the triangle schedule
    max_epochs: int = 20
    patience: int = 3  # stop once training accuracy has been 1 for this many epochs
    batch_size: int = 512
    momentum: float = 0.9
    weight_decay: float = 5e-4
    seed: int = 0

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.max_epochs < 1 or self.patience < 1 or self.batch_size < 1:
            raise InvalidInputError(f"need lr > 0, max_epochs >= 1, patience >= 1, batch_size >= 1; got {self}")


@dataclass(frozen=True, kw_only=True)
class RetrainResult:
    group: str
    train_acc: np.ndarray  # (E,) accuracy on the clean examples trained on, per epoch
    noisy_acc: np.ndarray  # (E,) accuracy on the noisy examples (their noisy labels), per epoch
    epochs: int


def retrain_group(
    model: nn.Module,
    initial: dict[str, torch.Tensor],
    group: str,
    images: torch.Tensor,
    labels: torch.Tensor,
    noisy: torch.Tensor,
    config: RetrainConfig = RetrainConfig(),
    progress: Progress = _no_progress,
    grouping: str = "paper",
) -> RetrainResult:
    """Reset `group`'s parameters to `initial`, freeze every other parameter and train the group on
    the clean examples only; after each epoch, measure the accuracy on the noisy examples under
    their noisy labels. `group` is a name in layer_groups(model, grouping). The model stays in eval
    mode throughout (BatchNorm statistics and every other tensor are left exactly as they were).
    `model` is changed in place.

    Args:
        model: the trained network; the group's parameters are reset and retrained in place.
        initial: a state dict holding the group's parameters to reset to (e.g. the initialization).
        group: a name in ``layer_groups(model, grouping)``.
        images: (N, C, H, W) the training set, uint8 or floats in [0, 1].
        labels: (N,) the labels trained on (the noisy ones included).
        noisy: (N,) bool, True for the mislabeled examples (left out of training, measured after each epoch).
        config: SGD's learning rate (a triangle schedule), epochs, patience, batch size, momentum, decay, seed.
        progress: ``progress(fraction, message)``, called after each epoch.
        grouping: how parameters form layers (`layer_groups`); "paper" by default.

    Returns:
        A RetrainResult: per epoch, the accuracy on the clean examples trained on and on the noisy examples
        under their noisy labels (the memorization the group alone can carry), and the epochs run.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from lenscape.analysis import retrain_group, RetrainConfig
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> initial = {k: v.clone() for k, v in net.state_dict().items()}
        >>> images = torch.rand(16, 1, 4, 4)
        >>> labels = (images.flatten(1)[:, 0] > 0.5).long()
        >>> noisy = torch.arange(16) < 4
        >>> labels[noisy] = 1 - labels[noisy]
        >>> first = net[1].weight.clone()
        >>> res = retrain_group(net, initial, "3", images, labels, noisy, RetrainConfig(lr=0.5, max_epochs=3))
        >>> res.group, res.epochs, res.noisy_acc.shape
        ('3', 3, (3,))
        >>> torch.equal(net[1].weight, first), torch.equal(net[3].weight, initial["3.weight"])   # only "3" moved
        (True, False)
    """
    groups = layer_groups(model, grouping)
    if group not in groups:
        raise InvalidInputError(f"no layer {group!r}; layers: {', '.join(groups)}")
    names = set(groups[group])
    device = _device(model)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n in names:
            params[n].copy_(initial[n].to(device))
    trained = [params[n] for n in sorted(names)]
    opt = torch.optim.SGD(trained, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    clean_idx = torch.nonzero(~noisy).flatten()
    noisy_idx = torch.nonzero(noisy).flatten()
    steps_per_epoch = math.ceil(len(clean_idx) / config.batch_size)
    total = steps_per_epoch * config.max_epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 - abs(2 * (s + 1) / (total + 1) - 1))
    gen = torch.Generator().manual_seed(config.seed)
    train_acc, noisy_acc, perfect = [], [], 0
    model.eval()
    with frozen_parameters(model):  # every other parameter frozen; all flags restored afterwards
        for p in trained:
            p.requires_grad_(True)
        for epoch in range(config.max_epochs):
            order = clean_idx[torch.randperm(len(clean_idx), generator=gen)]
            correct = 0
            for s in range(0, len(order), config.batch_size):
                idx = order[s : s + config.batch_size]
                logits = model(_float(images[idx], device))
                y = labels[idx].to(device)
                loss = F.cross_entropy(logits, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                correct += int((logits.argmax(1) == y).sum())
            train_acc.append(correct / max(1, len(order)))
            noisy_acc.append(evaluate(model, images[noisy_idx], labels[noisy_idx]).accuracy)
            progress(
                (epoch + 1) / config.max_epochs,
                f"epoch {epoch + 1}: clean train {train_acc[-1]:.1%} · noisy {noisy_acc[-1]:.1%}",
            )
            perfect = perfect + 1 if train_acc[-1] == 1.0 else 0
            if perfect >= config.patience:
                break
    return RetrainResult(
        group=group, train_acc=np.array(train_acc), noisy_acc=np.array(noisy_acc), epochs=len(train_acc)
    )


# ---------------------------------------------------------------------------------------------
# Greedy neuron flipping


@dataclass(frozen=True, kw_only=True)
class FlipConfig:
    batch_size: int = 256  # the example plus batch_size − 1 other training examples (its own draw)
    n_eot: int = 5  # noisy copies averaged for the prediction (expectation over transformation)
    noise: float = 0.01  # ‖noise‖ = noise · ‖x_B‖ over the whole batch
    max_steps: int = 100  # cap on neurons removed
    max_acc_drop: float = 0.25  # stop once the rest of the batch lost this much accuracy
    group_size: int = 1  # examples analysed together in one batched pass (CPU: 1 is fastest, see bench)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.batch_size < 2 or self.n_eot < 1 or self.noise < 0 or self.max_steps < 1 or self.group_size < 1:
            raise InvalidInputError(
                f"need batch_size >= 2, n_eot >= 1, noise >= 0, max_steps >= 1, group_size >= 1; got {self}"
            )
        if not 0 < self.max_acc_drop <= 1:
            raise InvalidInputError(f"max_acc_drop must be in (0, 1]; got {self.max_acc_drop}")


@dataclass(frozen=True, kw_only=True)
class FlipResult:
    examples: np.ndarray  # (K,) training-set indices analysed
    flipped: np.ndarray  # (K,) bool: the prediction left the training label
    n_neurons: np.ndarray  # (K,) neurons removed (when it flipped, the number it took)
    stopped: list[str]  # "flipped", "cap" (max_steps) or "accuracy" (max_acc_drop) per example
    neurons: list[list[tuple[int, int]]]  # per example, (layer index, unit) in the order removed
    layers: list[str]  # names of the neuron layers (the layer index's meaning)
    batch_acc_drop: np.ndarray  # (K,) accuracy the rest of its batch lost
    batches: np.ndarray  # (K, batch_size) the batch each example was analysed with (its own first)


class _FlipState(TypedDict):
    """flip_neurons' per-example results while the groups are worked through (see FlipResult)."""

    flipped: np.ndarray
    n_neurons: np.ndarray
    stopped: list[str]
    neurons: list[list[tuple[int, int]]]
    acc_drop: np.ndarray


class _Masks:
    """Forward hooks that multiply each neuron layer's output by a per-group (K, units) mask: rows
    come in K consecutive groups of equal size. Zeroing a unit's mask entry is zeroing its weights
    and bias, and ∂L/∂mask at 1 is the paper's score θ·∇_θ L summed over the unit's parameters."""

    def __init__(self, layers: Sequence[nn.Module], masks: list[torch.Tensor]) -> None:
        self.masks = masks
        self.handles = [m.register_forward_hook(self._hook(i)) for i, m in enumerate(layers)]

    def _hook(self, i: int):
        def hook(_module, _inputs, out):
            m = self.masks[i]
            k = m.shape[0]
            shaped = out.view(k, out.shape[0] // k, *out.shape[1:])
            return (shaped * m.view(k, 1, m.shape[1], *[1] * (out.ndim - 2))).view(out.shape)

        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _noise_scale(xb: torch.Tensor, noise: float) -> torch.Tensor:
    """(k,) the standard deviation of the noise on each group's example: ‖noise‖ = noise·‖x_B‖ over
    its whole batch (k, B, C, H, W), as the paper's code draws it, shared out over the batch's rows
    (E‖z‖² = B·D for a standard normal z of the batch's shape)."""
    return noise * xb.flatten(1).norm(dim=1) / math.sqrt(xb[0].numel())


def _example_batch(n: int, t: int, size: int, seed: int) -> torch.Tensor:
    """Example t first, then size − 1 other training examples drawn for t alone."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + t)
    others = torch.randperm(n - 1, generator=gen)[: size - 1]
    others = others + (others >= t).long()  # skip t
    return torch.cat([torch.tensor([t]), others])


def flip_neurons(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    examples: list[int] | torch.Tensor,
    config: FlipConfig = FlipConfig(),
    progress: Progress = _no_progress,
) -> FlipResult:
    """For each example t (a training-set index), remove neurons one at a time, greedily, until the
    model's prediction for t (averaged over n_eot noisy copies) leaves its training label `labels[t]`:
    each step removes the neuron with the largest first-order drop of
    L = (1/|B|)·[Σ_{i≠t} ℓ_i − |B|·ℓ_t] on t's own batch B, which raises t's loss while keeping the
    rest of the batch's. `group_size` examples are analysed in one batched pass; the result for an
    example does not depend on which others share its pass. The model is not changed.

    Args:
        model: the trained network; put in eval mode (and left there). The last conv or linear layer
            (the classifier) is never cut.
        images: (N, C, H, W) the training set, uint8 or floats in [0, 1].
        labels: (N,) the labels trained on.
        examples: the training-set indices to analyse.
        config: batch size, noisy copies (n_eot) and their noise, the caps on steps and on accuracy lost, seed.
        progress: ``progress(fraction, message)``, called after each group of examples.

    Returns:
        A FlipResult per example: whether it flipped, the neurons removed ((layer index, unit), in order)
        and how many, why it stopped ("flipped", "cap" or "accuracy") and the accuracy its batch lost.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from lenscape.analysis import flip_neurons, FlipConfig
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> images = torch.rand(12, 1, 4, 4)
        >>> with torch.no_grad():
        ...     labels = net(images).argmax(1)          # every example predicted as its label
        >>> labels[:3].tolist(), net[3].bias.argmax().item()   # with no hidden neuron left, class 1 wins
        ([1, 1, 0], 1)
        >>> res = flip_neurons(net, images, labels, [0, 2], FlipConfig(batch_size=8, n_eot=2, max_steps=8,
        ...                                                           max_acc_drop=1.0))
        >>> res.layers, res.flipped.tolist(), res.stopped, res.n_neurons.tolist()
        (['1'], [False, True], ['cap', 'flipped'], [8, 1])
    """
    examples = torch.as_tensor(examples, dtype=torch.long).flatten()
    n = len(labels)
    if len(examples) == 0:
        raise InvalidInputError("choose at least one example to analyse")
    if int(examples.min()) < 0 or int(examples.max()) >= n:
        raise InvalidInputError(f"example indices must be in [0, {n}); got {examples.tolist()}")
    size = min(config.batch_size, n)
    layers = neuron_layers(model)
    if not layers:
        raise InvalidInputError("the model has no convolution or linear layer to remove neurons from")
    model.eval()
    device = _device(model)
    units = neuron_units(layers)
    k_all = len(examples)
    batches = torch.stack([_example_batch(n, int(t), size, config.seed) for t in examples])
    out = _FlipState(
        flipped=np.zeros(k_all, bool),
        n_neurons=np.zeros(k_all, int),
        stopped=[""] * k_all,
        neurons=[[] for _ in range(k_all)],
        acc_drop=np.zeros(k_all),
    )
    with frozen_parameters(model):
        for g0 in range(0, k_all, config.group_size):
            group = list(range(g0, min(k_all, g0 + config.group_size)))
            _flip_group(model, images, labels, examples, batches, group, layers, units, config, device, out)
            progress(group[-1] / k_all + 1 / k_all, f"{group[-1] + 1}/{k_all} examples")
    return FlipResult(
        examples=examples.numpy(),
        flipped=out["flipped"],
        n_neurons=out["n_neurons"],
        stopped=out["stopped"],
        neurons=out["neurons"],
        layers=[name for name, _ in layers],
        batch_acc_drop=out["acc_drop"],
        batches=batches.numpy(),
    )


def _flip_group(
    model, images, labels, examples, batches, group, layers, units, config, device, out: _FlipState
) -> None:
    """The greedy loop for the examples `group` (positions into `examples`) in one batched pass. An
    example that stops leaves the pass: the rest go on with a smaller batch."""
    b = batches.shape[1]
    live = list(group)  # positions still being flipped
    xb = torch.stack([_float(images[batches[g]], device) for g in live])  # (k, B, C, H, W)
    yb = torch.stack([labels[batches[g]] for g in live]).to(device)  # (k, B)
    gens = [torch.Generator().manual_seed(config.seed * 1_000_003 + int(examples[g]) + 7) for g in live]
    scale = _noise_scale(xb, config.noise)  # (k,)
    masks = [torch.ones(len(live), u, device=device) for u in units]
    hooks = _Masks([m for _, m in layers], masks)
    offsets = np.cumsum([0, *units])
    base_acc = None

    def rest_accuracy(rows: list[int]) -> torch.Tensor:
        """Accuracy on the rest of the batch of live examples `rows`, with their neurons removed."""
        idx = torch.tensor(rows, dtype=torch.long, device=device)
        saved = list(masks)
        for li in range(len(masks)):
            masks[li] = saved[li][idx]
        try:
            with torch.no_grad():
                logits = model(xb[idx].flatten(0, 1))
        finally:
            masks[:] = saved
        return (logits.argmax(1).view(len(rows), b)[:, 1:] == yb[idx][:, 1:]).float().mean(1)

    def leave(done: list[int]) -> None:
        nonlocal xb, yb, scale, base_acc, gens, live
        keep = [i for i in range(len(live)) if i not in done]
        idx = torch.tensor(keep, dtype=torch.long, device=device)
        xb, yb, scale = xb[idx], yb[idx], scale[idx]
        base_acc = None if base_acc is None else base_acc[idx]
        gens, live = [gens[i] for i in keep], [live[i] for i in keep]
        for li in range(len(masks)):
            masks[li] = masks[li][idx]

    try:
        for step in range(config.max_steps + 1):
            k = len(live)
            noise = torch.stack([torch.randn(config.n_eot, *xb.shape[2:], generator=gen) for gen in gens]).to(device)
            noisy_t = xb[:, :1] + scale.view(k, 1, 1, 1, 1) * noise  # (k, n_eot, C, H, W)
            with torch.no_grad():
                probs = torch.softmax(model(noisy_t.flatten(0, 1)), 1).view(k, config.n_eot, -1).mean(1)
            flipped = torch.nonzero(probs.argmax(1) != yb[:, 0]).flatten().tolist()
            if flipped and base_acc is not None:  # what the rest of the batch lost, the last neuron included
                lost = (base_acc[flipped] - rest_accuracy(flipped)).cpu()
                for j, i in enumerate(flipped):
                    out["acc_drop"][live[i]] = float(lost[j])
            for i in flipped:
                out["flipped"][live[i]], out["stopped"][live[i]] = True, "flipped"
            if flipped:
                leave(flipped)
            if not live:
                break
            k = len(live)
            for m in masks:
                m.requires_grad_(True)
            logits = model(xb.flatten(0, 1))
            losses = F.cross_entropy(logits, yb.flatten(), reduction="none").view(k, b)
            rest_correct = (logits.argmax(1).view(k, b)[:, 1:] == yb[:, 1:]).float().mean(1).detach()
            if base_acc is None:
                base_acc = rest_correct
            drop = (base_acc - rest_correct).cpu()
            for i in range(k):
                out["acc_drop"][live[i]] = float(drop[i])
            stopped = [i for i in range(k) if step == config.max_steps or float(drop[i]) > config.max_acc_drop]
            objective = (losses[:, 1:].sum(1) - b * losses[:, 0]) / b  # (k,) one L per example
            grads = None if len(stopped) == k else torch.autograd.grad(objective.sum(), masks)
            for m in masks:
                m.requires_grad_(False)
            for i in stopped:
                out["stopped"][live[i]] = "cap" if step == config.max_steps else "accuracy"
            if grads is None:
                break
            with torch.no_grad():
                scores = torch.cat(
                    [torch.where(m > 0, g, torch.full_like(g, -math.inf)) for m, g in zip(masks, grads)], 1
                )
                best = scores.argmax(1).tolist()  # (k,) over all units
                for i in range(k):
                    if i in stopped:
                        continue
                    layer = int(np.searchsorted(offsets, best[i], side="right") - 1)
                    unit = best[i] - int(offsets[layer])
                    masks[layer][i, unit] = 0.0
                    out["neurons"][live[i]].append((layer, unit))
                    out["n_neurons"][live[i]] += 1
            if stopped:
                leave(stopped)
    finally:
        hooks.remove()


def masked_accuracy(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, neurons: list[tuple[int, int]], batch_size: int = 1024
) -> float:
    """Accuracy with the given neurons (layer index into neuron_layers, unit) removed."""
    layers = neuron_layers(model)
    units = neuron_units(layers)
    masks = [torch.ones(1, u, device=_device(model)) for u in units]
    for layer, unit in neurons:
        masks[layer][0, unit] = 0.0
    hooks = _Masks([m for _, m in layers], masks)
    try:
        return evaluate(model, images, labels, batch_size=batch_size).accuracy
    finally:
        hooks.remove()


# ---------------------------------------------------------------------------------------------
# Example-tied dropout


def tied_dropout_accuracies(
    model: nn.Module, sets: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]], batch_size: int = 1024
) -> dict[str, dict[str, float]]:
    """{"kept": {set: acc}, "dropped": {set: acc}} for sets (images, labels, training indices or
    None). Kept: training examples (indices given) with their own example-tied masks, as they were
    trained; other images (the test set) with the memorization neurons scaled by p_mem (the test
    mode). Dropped: the memorization neurons zeroed and the generalization neurons rescaled.

    Args:
        model: a network with example-tied dropout (an ArchSpec with p_gen and p_mem set); put in
            eval mode (and left there), the dropout layers' modes restored afterwards.
        sets: {name: (images (N, C, H, W) uint8 or [0, 1] floats, labels (N,), training indices (N,) or None)}.
        batch_size: images per forward pass.

    Returns:
        {"kept": {name: accuracy}, "dropped": {name: accuracy}} (NaN for an empty set).

    Example:
        >>> import torch
        >>> from lenscape.analysis import tied_dropout_accuracies, evaluate
        >>> from lenscape.models.architectures import ArchSpec, build_model
        >>> net = build_model(ArchSpec(name="mlp", in_shape=(1, 4, 4), num_classes=2, mean=(0.5,), std=(0.5,),
        ...                            widths=(8,), p_gen=0.5, p_mem=1.0), seed=0)
        >>> gen = torch.Generator().manual_seed(0)
        >>> x, y = torch.rand(10, 1, 4, 4, generator=gen), torch.randint(0, 2, (10,), generator=gen)
        >>> acc = tied_dropout_accuracies(net, {"train": (x, y, torch.arange(10)), "test": (x, y, None)})
        >>> sorted(acc), sorted(acc["kept"])
        (['dropped', 'kept'], ['test', 'train'])
        >>> # p_mem = 1: every example keeps every memorization neuron, so "kept" is the plain network
        >>> acc["kept"]["train"] == acc["kept"]["test"] == evaluate(net, x, y).accuracy
        True
    """
    from lenscape.models.architectures import ExampleTiedDropout, example_ids

    layers = [m for m in model.modules() if isinstance(m, ExampleTiedDropout)]
    if not layers:
        raise InvalidInputError("this model has no example-tied dropout: train one with p_gen and p_mem set")
    before = [m.mode for m in layers]
    device = _device(model)
    model.eval()

    def acc(x, y, ids):
        correct = 0
        with torch.no_grad():
            for s in range(0, len(y), batch_size):
                with example_ids(model, None if ids is None else ids[s : s + batch_size]):
                    correct += int(
                        (model(_float(x[s : s + batch_size], device)).argmax(1).cpu() == y[s : s + batch_size]).sum()
                    )
        return correct / len(y) if len(y) else float("nan")

    result: dict[str, dict[str, float]] = {"kept": {}, "dropped": {}}
    try:
        for name, (x, y, ids) in sets.items():
            for m in layers:
                m.mode = "test" if ids is None else "tied"
            result["kept"][name] = acc(x, y, ids)
            for m in layers:
                m.mode = "drop"
            result["dropped"][name] = acc(x, y, None)
    finally:
        for m, mode in zip(layers, before):
            m.mode = mode
    return result


@dataclass(frozen=True, kw_only=True)
class MemorizationCurves:
    epochs: list[int]
    clean_acc: np.ndarray  # (E,) on the clean training examples
    noisy_acc: np.ndarray  # (E,) on the relabelled ones, under their noisy labels (memorized share)
    noisy_true_acc: np.ndarray  # (E,) on the relabelled ones, under their original labels
    test_acc: np.ndarray  # (E,)


def memorization_curves(
    model: nn.Module,
    states: Mapping[int, dict[str, torch.Tensor]],
    images: torch.Tensor,
    labels: torch.Tensor,
    noisy: torch.Tensor,
    original_labels: torch.Tensor,
    test_images: torch.Tensor,
    test_labels: torch.Tensor,
    *,
    progress: Progress = _no_progress,
) -> MemorizationCurves:
    """How a network memorizes mislabeled examples over training (Maini et al. 2023, Fig. 1): per
    checkpoint, the accuracy on the clean examples, on the relabelled ones under their noisy labels
    (the memorized share) and under their true labels, and on the test set.

    Args:
        model: a network of the run's architecture; each of `states` is loaded into it in turn.
        states: {epoch: state_dict}; any Mapping, so a lazy one can read checkpoints one at a time.
        images, labels: the training set as trained on (noisy labels included).
        noisy: (N,) bool, True for the relabelled examples; original_labels: their labels before.
        test_images, test_labels: the test set.

    Returns:
        MemorizationCurves, one value per epoch (sorted).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
        >>> x, y = torch.rand(6, 1, 2, 2), torch.tensor([0, 1, 0, 1, 0, 1])
        >>> noisy = torch.tensor([False, False, False, False, True, True])
        >>> curves = memorization_curves(net, {0: net.state_dict()}, x, y, noisy, 1 - y, x, y)
        >>> curves.epochs, curves.noisy_acc.shape
        ([0], (1,))
    """
    mask = noisy.bool()
    epochs = sorted(states)
    rows = []
    for i, e in enumerate(epochs):
        model.load_state_dict(states[e])
        rows.append(
            [
                evaluate(model, a, b).accuracy
                for a, b in (
                    (images[~mask], labels[~mask]),
                    (images[mask], labels[mask]),
                    (images[mask], original_labels[mask]),
                    (test_images, test_labels),
                )
            ]
        )
        progress((i + 1) / len(epochs), f"epoch {e}")
    r = np.array(rows, dtype=float).reshape(len(epochs), 4)
    return MemorizationCurves(
        epochs=epochs, clean_acc=r[:, 0], noisy_acc=r[:, 1], noisy_true_acc=r[:, 2], test_acc=r[:, 3]
    )
