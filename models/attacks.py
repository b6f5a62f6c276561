"""PGD in pixel space ([0, 1] images, normalization inside the model)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from lenscape.errors import InvalidInputError


@dataclass(frozen=True, kw_only=True)
class PGDConfig:
    norm: Literal["l2", "linf"] = "l2"
    eps: float = 0.5
    steps: int = 7
    step_size: float = 0.0  # 0 = 2.5 * eps / steps (Madry et al.'s rule of thumb)
    random_start: bool = False  # the saliency paper's PGD starts at x

    def __post_init__(self) -> None:
        if self.norm not in ("l2", "linf"):
            raise InvalidInputError(f"PGD norm must be 'l2' or 'linf'; got {self.norm!r}")
        if self.eps <= 0 or self.steps < 1 or self.step_size < 0:
            raise InvalidInputError(f"PGD needs eps > 0, steps >= 1, step_size >= 0; got {self}")

    @property
    def alpha(self) -> float:
        return self.step_size or 2.5 * self.eps / self.steps

    def to_dict(self) -> dict:
        return asdict(self)


def pgd_perturbation(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, cfg: PGDConfig, generator: torch.Generator | None = None
) -> torch.Tensor:
    """delta maximizing CE(model(x + delta), y) within the eps-ball, with x + delta in [0, 1].

    Runs in whatever mode the model is in (adversarial training computes delta in train mode).
    Parameter gradients are left untouched. A random start draws from `generator` (a CPU
    generator; a fixed seed when none is given), never from the global RNG.
    """
    delta = torch.zeros_like(x)
    if cfg.random_start:
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        start = torch.rand(x.shape, generator=gen, dtype=x.dtype).mul_(2 * cfg.eps).sub_(cfg.eps)
        delta = _project(start.to(x.device), cfg)
    for _ in range(cfg.steps):
        delta.requires_grad_(True)
        loss = F.cross_entropy(model(x + delta), y)
        (grad,) = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            if cfg.norm == "linf":
                delta = delta + cfg.alpha * grad.sign()
            else:
                norms = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (x.ndim - 1))
                delta = delta + cfg.alpha * grad / norms
            delta = _project(delta, cfg)
            delta = (x + delta).clamp(0, 1) - x
    return delta.detach()


def _project(delta: torch.Tensor, cfg: PGDConfig) -> torch.Tensor:
    if cfg.norm == "linf":
        return delta.clamp(-cfg.eps, cfg.eps)
    norms = delta.flatten(1).norm(dim=1).view(-1, *[1] * (delta.ndim - 1))
    return delta * (cfg.eps / norms.clamp_min(cfg.eps))
