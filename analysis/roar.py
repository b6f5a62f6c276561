"""DiffROAR (Shah, Jain & Netrapalli 2021): keep only the top-k or bottom-k attributed
coordinates, retrain, and compare: DiffROAR(k) = Acc(top-k kept) − Acc(bottom-k kept).

The whole check is `diffroar`; it takes the retraining as a function (training is not this
package's business), so a notebook passes its own and the app's job passes the recipe's training.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from lenscape.analysis.evaluation import Progress, _no_progress, serial_map
from lenscape.analysis.saliency import SaliencyConfig, attribute
from lenscape.errors import InvalidInputError


@dataclass(frozen=True, kw_only=True)
class DiffRoarConfig:
    methods: tuple[str, ...] = ("gradient",)  # "random" is always added as the baseline
    k_grid: tuple[float, ...] = (0.05, 0.1, 0.2, 0.5)  # fraction of coordinates kept
    seeds: tuple[int, ...] = (0, 1)  # retraining seeds per arm (the paper: 2-3 at least)
    epochs: int = 2  # per retraining; the best epoch's test accuracy counts
    train_subset: int = 0  # retrain on at most this many images (0 = all)
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
    k_grid: np.ndarray  # (K,)
    acc_top: np.ndarray  # (M, K, S) test accuracy keeping the top-k coordinates
    acc_bottom: np.ndarray  # (M, K, S) keeping the bottom-k
    diff_mean: np.ndarray  # (M, K) mean over all (top run, bottom run) pairs
    diff_std: np.ndarray  # (M, K)
    config: DiffRoarConfig


def keep_mask(attr: torch.Tensor, k: float, keep: str) -> torch.Tensor:
    """(N, C, H, W) bool: True on the round(k·D) coordinates with the largest (keep="top") or
    smallest ("bottom") |attribution|, ranked per coordinate as the paper's code does.

    Args:
        attr: (N, C, H, W) attributions (D = C·H·W coordinates per image); only |attr| counts.
        k: the fraction of the D coordinates to keep, in (0, 1] (at least one is kept).
        keep: "top" (the largest |attr|) or "bottom" (the smallest).

    Returns:
        An (N, C, H, W) bool tensor, True on the kept coordinates.

    Example:
        >>> import torch
        >>> from lenscape.analysis import keep_mask
        >>> attr = torch.tensor([[[[0.1, -0.9], [0.5, 0.0]]]])     # one 1×2×2 map
        >>> keep_mask(attr, 0.5, "top")[0, 0].tolist()             # |-0.9| and |0.5|: the sign does not count
        [[False, True], [True, False]]
        >>> keep_mask(attr, 0.5, "bottom")[0, 0].tolist()
        [[True, False], [False, True]]
    """
    if keep not in ("top", "bottom"):
        raise InvalidInputError(f"keep must be 'top' or 'bottom'; got {keep!r}")
    a = attr.abs().flatten(1)  # (N, D)
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
    diffs = acc_top[..., :, None] - acc_bottom[..., None, :]  # (..., S, S)
    flat = diffs.reshape(*diffs.shape[:-2], -1)
    return flat.mean(-1), flat.std(-1)


Images = tuple[torch.Tensor, torch.Tensor]  # (uint8 images (N, C, H, W), labels (N,))
Retrain = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int], float]


def diffroar(
    model: nn.Module,
    train: Images,
    test: Images,
    retrain_and_score: Retrain,
    config: DiffRoarConfig = DiffRoarConfig(),
    saliency: SaliencyConfig | None = None,
    *,
    fill: int | None = None,
    map: Callable[[Callable, list[tuple]], list] = serial_map,
    progress: Progress = _no_progress,
) -> DiffRoarResult:
    """DiffROAR(k) = Acc(top-k kept) − Acc(bottom-k kept) for each method of `config` (Shah et al. 2021).

    Args:
        model: the classifier whose attributions rank the coordinates (eval mode is used).
        train, test: (uint8 images, labels) to mask and retrain on / score on.
        retrain_and_score: ``(train_images, train_labels, test_images, test_labels, seed) -> accuracy``
            trains a fresh model of the recipe under study and returns its (best) test accuracy.
        config: methods, the k grid, the retraining seeds.
        saliency: the attribution settings; default the gradient of the true label, as the paper.
        fill: the value masked coordinates take (default: the training images' mean pixel).
        map: ``map(fn, items) == [fn(*item) for item in items]``, computed anywhere (the app runs the
            retrainings side by side on a Ray cluster); serial by default.

    Returns:
        A DiffRoarResult: accuracies (methods, K, seeds) for both arms and their pairwise differences.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 2)).eval()
        >>> imgs = torch.randint(0, 256, (8, 1, 4, 4), dtype=torch.uint8)
        >>> labels = torch.arange(8) % 2
        >>> count = lambda x, y, tx, ty, seed: float((tx > 0).float().mean())   # a stand-in "training"
        >>> res = diffroar(net, (imgs, labels), (imgs, labels), count, DiffRoarConfig(k_grid=(0.25,), seeds=(0,)),
        ...                fill=0)
        >>> res.methods, res.acc_top.shape
        (['gradient', 'random'], (2, 1, 1))
    """
    saliency = saliency or SaliencyConfig(target="true")
    (x_train, y_train), (x_test, y_test) = train, test
    fill = int(round(float(x_train.float().mean()))) if fill is None else fill
    methods = config.all_methods
    acc = np.zeros((2, len(methods), len(config.k_grid), len(config.seeds)))
    for mi, method in enumerate(methods):
        progress(mi / len(methods), f"attributions: {method}")
        scfg = replace(saliency, method=method, seed=config.attribution_seed)
        a_train = attribute(model, _unit(x_train), y_train, scfg)
        a_test = attribute(model, _unit(x_test), y_test, scfg)
        items, slots = [], []
        for ki, k in enumerate(config.k_grid):
            for arm, keep in enumerate(("top", "bottom")):
                tr = apply_keep_mask(x_train, keep_mask(a_train, k, keep), fill)
                te = apply_keep_mask(x_test, keep_mask(a_test, k, keep), fill)
                for si, seed in enumerate(config.seeds):
                    items.append((tr, y_train, te, y_test, seed))
                    slots.append((arm, mi, ki, si))
        for slot, score in zip(slots, map(retrain_and_score, items)):
            acc[slot] = score
    progress(1.0, "done")
    mean, std = pairwise_differences(acc[0], acc[1])
    return DiffRoarResult(
        methods=list(methods),
        k_grid=np.array(config.k_grid),
        acc_top=acc[0],
        acc_bottom=acc[1],
        diff_mean=mean,
        diff_std=std,
        config=config,
    )


def _unit(images: torch.Tensor) -> torch.Tensor:
    return images.float().div(255.0) if images.dtype == torch.uint8 else images
