"""Layer activations as (n_examples, n_features) matrices, extracted in batches in eval mode."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lenscape.analysis.evaluation import Progress, _no_progress, evaluate


def hidden_layers(model: nn.Module) -> list[str]:
    """The layers worth comparing, in forward order: top-level activations (ReLU) and stages
    (layer1, layer2, ...), then the logits layer.

    Args:
        model: the network; only its top-level children (``named_children()``) are looked at.

    Returns:
        Their names, ready for `extract`: each top-level ReLU and ``layer*`` stage, then the last
        top-level child that owns parameters (the logits layer), listed once.

    Example:
        >>> from torch import nn
        >>> from lenscape.analysis import hidden_layers
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 4))
        >>> hidden_layers(net)   # the ReLU, then the logits; not the flatten nor the first linear layer
        ['2', '3']
    """
    children = list(model.named_children())
    picks = [n for n, m in children if isinstance(m, nn.ReLU) or n.startswith("layer")]
    logits = [n for n, m in children if any(True for _ in m.parameters())][-1:]
    if not picks:  # a network of another shape (a user's own): its repeated blocks, else its parts
        blocks = block_container(model)
        picks = (
            [f"{blocks}.{n}" for n, _ in dict(model.named_modules())[blocks].named_children()]
            if blocks
            else [n for n, m in children if any(True for _ in m.parameters())][:-1]
        )
    return picks + [n for n in logits if n not in picks]


def block_container(model: nn.Module) -> str | None:
    """The path of the network's stack of blocks: the Sequential or ModuleList (at most two levels
    down) holding the most children, 2 or more, all of one class that owns submodules (a ResNet's
    stage, a transformer's encoder blocks). None if it has no such stack.

    Example:
        >>> from torch import nn
        >>> block = lambda: nn.Sequential(nn.Linear(4, 4), nn.ReLU())
        >>> net = nn.Sequential(nn.Linear(8, 4), nn.Sequential(block(), block(), block()), nn.Linear(4, 2))
        >>> block_container(net)
        '1'
    """
    best, size = None, 1
    for name, m in model.named_modules():
        if not name or name.count(".") > 1 or not isinstance(m, (nn.Sequential, nn.ModuleList)):
            continue
        kids = list(m.children())
        if (
            len(kids) > size
            and len({type(k) for k in kids}) == 1
            and any(True for _ in kids[0].children())
            and any(True for _ in kids[0].parameters())
        ):
            best, size = name, len(kids)
    return best


def extract(
    model: nn.Module,
    images: torch.Tensor,
    layers: Sequence[str],
    conv_mode: str = "pool",
    batch_size: int = 256,
    progress: Progress = _no_progress,
) -> dict[str, torch.Tensor]:
    """{layer: (N, D)} on the CPU. Convolutional outputs become (N, C) by average pooling
    ("pool"), (N, C·H·W) ("flatten"), or (N·H·W, C) with positions as data points ("positions").

    Args:
        model: the network, run in eval mode (its mode is restored afterwards).
        images: (N, C, H, W) floats in [0, 1], or uint8.
        layers: ``named_modules()`` paths of the layers to record (see `hidden_layers`).
        conv_mode: how a (N, C, H, W) output becomes a matrix: "pool" (default), "flatten" or "positions".
        batch_size: images per forward pass; bounds memory, not the answer.
        progress: ``progress(fraction, message)``, called after each chunk.

    Returns:
        {layer: float tensor (N, D)} on the CPU ((N·H·W, C) for "positions").

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from lenscape.analysis import extract
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU())
        >>> images = torch.rand(5, 1, 4, 4)
        >>> pooled = extract(net, images, ["1"])["1"]
        >>> positions = extract(net, images, ["1"], conv_mode="positions")["1"]
        >>> tuple(pooled.shape), tuple(positions.shape)
        ((5, 3), (80, 3))
        >>> torch.allclose(pooled, positions.view(5, 16, 3).mean(1))   # pooling = the mean over positions
        True
    """
    return evaluate(
        model, images, layers=layers, conv_mode=conv_mode, batch_size=batch_size, progress=progress
    ).activations
