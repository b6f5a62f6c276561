"""Model randomization check (Adebayo et al. 2018): re-initialize layers from the top down and
watch whether a method's maps change. A map that survives randomizing the whole network does not
explain the model."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from analysis.saliency import SaliencyConfig, attribute, to_map

STILL_SIMILAR = 0.5   # mean rank correlation with the original map, after full randomization, that flags a method


@dataclass(frozen=True, kw_only=True)
class RandomizationResult:
    method: str
    layers: list[str]             # re-initialized cumulatively in this order (top first)
    maps: np.ndarray              # (L + 1, N, H, W) |map|: the original first
    rank_corr: np.ndarray         # (L, N) Spearman correlation with the original map
    flagged: bool                 # maps barely change even with every layer randomized


def parameter_layers(model: nn.Module) -> list[str]:
    """Modules that own parameters (conv, linear, norm layers), input to output."""
    return [n for n, m in model.named_modules() if n and any(True for _ in m.parameters(recurse=False))]


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Rank correlation per row of (N, D) tensors."""
    ra = a.flatten(1).argsort(1).argsort(1).double()
    rb = b.flatten(1).argsort(1).argsort(1).double()
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    return (ra * rb).sum(1) / (ra.norm(dim=1) * rb.norm(dim=1)).clamp_min(1e-12)


def cascading_randomization(model: nn.Module, x: torch.Tensor, target: torch.Tensor, config: SaliencyConfig,
                            seed: int = 0) -> RandomizationResult:
    """Maps after re-initializing the top layer, then the top two, ... down to the first."""
    model = copy.deepcopy(model).eval()
    base = to_map(attribute(model, x, target, config), "abs")
    modules = dict(model.named_modules())
    layers = list(reversed(parameter_layers(model)))
    maps, corr = [base], []
    for i, name in enumerate(layers):
        torch.manual_seed(seed + i)
        _reinit(modules[name])
        m = to_map(attribute(model, x, target, config), "abs")
        maps.append(m)
        corr.append(spearman(base, m))
    rank_corr = torch.stack(corr).numpy() if corr else np.zeros((0, len(x)))
    flagged = bool(len(corr) and float(rank_corr[-1].mean()) >= STILL_SIMILAR)
    return RandomizationResult(method=config.method, layers=layers, maps=torch.stack(maps).numpy(),
                               rank_corr=rank_corr, flagged=flagged)


def _reinit(module: nn.Module) -> None:
    if hasattr(module, "reset_parameters"):
        module.reset_parameters()
    else:  # a container owning raw parameters: redraw them
        for p in module.parameters(recurse=False):
            nn.init.normal_(p, std=0.02)
