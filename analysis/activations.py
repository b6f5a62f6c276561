"""Layer activations as (n_examples, n_features) matrices, extracted in batches in eval mode."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from analysis.hooks import recording
from analysis.similarity import conv_to_matrix

CONV_MODES = ("pool", "flatten", "positions")


def hidden_layers(model: nn.Module) -> list[str]:
    """The layers worth comparing, in forward order: top-level activations (ReLU) and stages
    (layer1, layer2, ...), then the logits layer."""
    children = list(model.named_children())
    picks = [n for n, m in children if isinstance(m, nn.ReLU) or n.startswith("layer")]
    logits = [n for n, m in children if any(True for _ in m.parameters())][-1:]
    return picks + [n for n in logits if n not in picks]


@torch.no_grad()
def extract(model: nn.Module, x: torch.Tensor, layers: Sequence[str], conv_mode: str = "pool",
            batch_size: int = 256, progress: Callable[[float], None] = lambda f: None) -> dict[str, torch.Tensor]:
    """{layer: (N, D)} on the CPU. Convolutional outputs become (N, C) by average pooling
    ("pool"), (N, C·H·W) ("flatten"), or (N·H·W, C) with positions as data points ("positions")."""
    if conv_mode not in CONV_MODES:
        raise ValueError(f"conv_mode must be one of {CONV_MODES}; got {conv_mode!r}")
    model.eval()
    device = next(model.parameters()).device
    out: dict[str, list[torch.Tensor]] = {n: [] for n in layers}
    with recording(model, layers) as acts:
        for i in range(0, len(x), batch_size):
            model(x[i:i + batch_size].to(device))
            for n in layers:
                a = acts[n]
                a = conv_to_matrix(a, conv_mode) if a.ndim == 4 and conv_mode != "flatten" else a.flatten(1)
                out[n].append(a.float().cpu())
            progress(min(1.0, (i + batch_size) / len(x)))
    return {n: torch.cat(v) for n, v in out.items()}
