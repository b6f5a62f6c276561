"""Layer activations as (n_examples, n_features) matrices, extracted in batches in eval mode."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from lenscape.analysis.evaluation import Progress, _no_progress, evaluate


def hidden_layers(model: nn.Module) -> list[str]:
    """The layers worth comparing, in forward order: top-level activations (ReLU) and stages
    (layer1, layer2, ...), then the logits layer."""
    children = list(model.named_children())
    picks = [n for n, m in children if isinstance(m, nn.ReLU) or n.startswith("layer")]
    logits = [n for n, m in children if any(True for _ in m.parameters())][-1:]
    return picks + [n for n in logits if n not in picks]


def extract(model: nn.Module, images: torch.Tensor, layers: Sequence[str], conv_mode: str = "pool",
            batch_size: int = 256, progress: Progress = _no_progress) -> dict[str, torch.Tensor]:
    """{layer: (N, D)} on the CPU. Convolutional outputs become (N, C) by average pooling
    ("pool"), (N, C·H·W) ("flatten"), or (N·H·W, C) with positions as data points ("positions")."""
    return evaluate(model, images, layers=layers, conv_mode=conv_mode, batch_size=batch_size, progress=progress).activations
