"""What a model is and how well it does: layer table, accuracy, confusion matrix, samples."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from lenscape.analysis.hooks import run_with_cache
from lenscape.errors import InvalidInputError


@dataclass(frozen=True, kw_only=True)
class SummaryConfig:
    n_samples: int = 24  # sample predictions shown in the grid
    max_eval: int = 0  # evaluate on at most this many examples per split (0 = all)
    seed: int = 0  # which test images are sampled

    def __post_init__(self) -> None:
        if self.n_samples < 0 or self.max_eval < 0:
            raise InvalidInputError(f"n_samples and max_eval are 0 or more; got {self.n_samples}, {self.max_eval}")


@dataclass(frozen=True, kw_only=True)
class ModelSummary:
    layers: list[dict]  # [{name, type, output_shape, params}]
    n_params: int
    train_acc: float
    test_acc: float
    confusion: np.ndarray  # (C, C): rows true class, columns predicted
    sample_index: np.ndarray  # (K,) test-set indices
    sample_probs: np.ndarray  # (K, C)
    sample_labels: np.ndarray  # (K,)
    classes: list[str]
    fingerprint: str


def layer_table(model: nn.Module, in_shape: tuple[int, ...]) -> list[dict]:
    """Every named module with its type, output shape for one input, and own parameter count."""
    names = [n for n, _ in model.named_modules() if n]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            device = next(model.parameters()).device
            _, acts = run_with_cache(model, torch.zeros(1, *in_shape, device=device), names)
    finally:
        model.train(was_training)
    modules = dict(model.named_modules())
    rows = []
    for name in names:
        out = acts.get(name)
        shape = tuple(out.shape[1:]) if isinstance(out, torch.Tensor) else None
        own = sum(p.numel() for p in modules[name].parameters(recurse=False))
        rows.append(
            {
                "name": name,
                "type": type(modules[name]).__name__,
                "output_shape": "×".join(map(str, shape)) if shape else "—",
                "params": own,
            }
        )
    return rows


def confusion_matrix(pred: torch.Tensor, labels: torch.Tensor, num_classes: int) -> np.ndarray:
    """(C, C) counts: row = true class, column = predicted class."""
    flat = labels.long() * num_classes + pred.long()
    return torch.bincount(flat, minlength=num_classes * num_classes).view(num_classes, num_classes).numpy()
