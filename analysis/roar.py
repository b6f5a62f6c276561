"""DiffROAR (Shah, Jain & Netrapalli 2021): keep only the top-k or bottom-k attributed
coordinates, retrain, and compare: DiffROAR(k) = Acc(top-k kept) − Acc(bottom-k kept).

The pure parts live here (ranking, masking, the summary over seeds); the retraining loop is a
backend job, because it trains models.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from lenscape.errors import InvalidInputError


@dataclass(frozen=True, kw_only=True)
class DiffRoarConfig:
    methods: tuple[str, ...] = ("gradient",)      # "random" is always added as the baseline
    k_grid: tuple[float, ...] = (0.05, 0.1, 0.2, 0.5)  # fraction of coordinates kept
    seeds: tuple[int, ...] = (0, 1)               # retraining seeds per arm (the paper: 2-3 at least)
    epochs: int = 2                               # per retraining; the best epoch's test accuracy counts
    train_subset: int = 0                         # retrain on at most this many images (0 = all)
    attribution_seed: int = 0

    def __post_init__(self) -> None:
        if not self.k_grid or not all(0 < k <= 1 for k in self.k_grid):
            raise InvalidInputError(f"k values are fractions in (0, 1]; got {self.k_grid}")
        if not self.seeds or self.epochs < 1:
            raise InvalidInputError(f"need at least one seed and one epoch; got {self.seeds}, {self.epochs}")

    @property
    def all_methods(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys([*self.methods, "random"]))

    @property
    def n_trainings(self) -> int:
        return len(self.all_methods) * len(self.k_grid) * len(self.seeds) * 2


@dataclass(frozen=True, kw_only=True)
class DiffRoarResult:
    methods: list[str]
    k_grid: np.ndarray            # (K,)
    acc_top: np.ndarray           # (M, K, S) test accuracy keeping the top-k coordinates
    acc_bottom: np.ndarray        # (M, K, S) keeping the bottom-k
    diff_mean: np.ndarray         # (M, K) mean over all (top run, bottom run) pairs
    diff_std: np.ndarray          # (M, K)
    config: DiffRoarConfig


def keep_mask(attr: torch.Tensor, k: float, keep: str) -> torch.Tensor:
    """(N, C, H, W) bool: True on the round(k·D) coordinates with the largest (keep="top") or
    smallest ("bottom") |attribution|, ranked per coordinate as the paper's code does."""
    if keep not in ("top", "bottom"):
        raise InvalidInputError(f"keep must be 'top' or 'bottom'; got {keep!r}")
    a = attr.abs().flatten(1)                                      # (N, D)
    n_keep = max(1, int(round(k * a.shape[1])))
    idx = a.topk(n_keep, dim=1, largest=keep == "top").indices
    mask = torch.zeros_like(a, dtype=torch.bool).scatter_(1, idx, True)
    return mask.view_as(attr)


def apply_keep_mask(images: torch.Tensor, mask: torch.Tensor, fill: int) -> torch.Tensor:
    """uint8 images with every coordinate outside `mask` set to `fill` (the data mean)."""
    return torch.where(mask, images, torch.full_like(images, fill))


def pairwise_differences(acc_top: np.ndarray, acc_bottom: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of top − bottom over every (top seed, bottom seed) pair, as the notebook does.
    acc_*: (..., S) → (...)."""
    diffs = acc_top[..., :, None] - acc_bottom[..., None, :]      # (..., S, S)
    flat = diffs.reshape(*diffs.shape[:-2], -1)
    return flat.mean(-1), flat.std(-1)
