"""Forward hooks that cannot leak: installed in a context manager, removed in `finally`."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from lenscape.errors import InvalidInputError


def _store(acts: dict[str, torch.Tensor], name: str) -> Callable:
    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        acts[name] = output

    return hook


@contextmanager
def recording(model: nn.Module, layers: Sequence[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Record the outputs of `layers` (named_modules() paths) during forward passes."""
    modules = dict(model.named_modules())
    if missing := [name for name in layers if name not in modules]:
        raise InvalidInputError(f"unknown layers {missing}; the model has {list(modules)[1:9]}...")
    acts: dict[str, torch.Tensor] = {}
    handles = [modules[n].register_forward_hook(_store(acts, n)) for n in layers]
    try:
        yield acts
    finally:
        for h in handles:
            h.remove()


def run_with_cache(
    model: nn.Module, images: torch.Tensor, layers: Sequence[str]
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(output, {layer: activation}) for one forward pass."""
    with recording(model, layers) as acts:
        out = model(images)
    return out, dict(acts)


def conv_to_matrix(acts: np.ndarray | torch.Tensor, mode: str = "pool") -> torch.Tensor:
    """(N, C, H, W) → (N, C) by average pooling ("pool"), or (N·H·W, C) with every spatial
    position as a data point ("positions"). 2-D input is returned as it is.

    Args:
        acts: (N, C, H, W) convolutional activations, or (N, D) (returned unchanged); array or tensor.
        mode: "pool" (default: the mean over H and W) or "positions" (rows ordered image, row, column).

    Returns:
        A tensor (N, C) for "pool", (N·H·W, C) for "positions".

    Example:
        >>> import torch
        >>> from lenscape.analysis import conv_to_matrix
        >>> acts = torch.arange(24.0).view(2, 3, 2, 2)      # 2 images, 3 channels, 2×2 positions
        >>> conv_to_matrix(acts)                             # each channel's mean over its 4 positions
        tensor([[ 1.5000,  5.5000,  9.5000],
                [13.5000, 17.5000, 21.5000]])
        >>> conv_to_matrix(acts, "positions")[:2]            # image 0 at (0, 0), then at (0, 1)
        tensor([[0., 4., 8.],
                [1., 5., 9.]])
    """
    t = torch.as_tensor(acts)
    if t.ndim == 2:
        return t
    if t.ndim != 4:
        raise InvalidInputError(f"expected (N, C, H, W) or (N, D) activations; got {tuple(t.shape)}")
    if mode == "pool":
        return t.mean(dim=(2, 3))
    if mode == "positions":
        return t.permute(0, 2, 3, 1).reshape(-1, t.shape[1])
    raise InvalidInputError(f"mode must be 'pool' or 'positions'; got {mode!r}")
