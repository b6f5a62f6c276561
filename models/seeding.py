"""Seeded initialization without the global RNG.

Jobs run on worker threads that share PyTorch's global generator, so `torch.manual_seed(s)` in one
job changes what another draws. Lenscape draws its random numbers from a `torch.Generator` made
per call instead. PyTorch's layers only initialize from the global generator, so `init_parameters`
redoes their default initialization (the formulas of `nn.Linear.reset_parameters` and
`nn._ConvNd.reset_parameters`) with a generator. A layer of another kind is initialized by its own
`reset_parameters` under `global_seed`: a process-wide lock around a forked, seeded global RNG,
which is also how models whose constructor sets a custom initialization (torchvision's) are built.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

_GLOBAL_RNG = threading.RLock()
_EXPLICIT = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)


def generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with `seed`."""
    return torch.Generator().manual_seed(int(seed))


@contextmanager
def global_seed(seed: int) -> Iterator[None]:
    """Run code that can only use the global CPU generator, seeded, holding a process-wide lock;
    the global generator is as it was afterwards."""
    with _GLOBAL_RNG, torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(int(seed))
        yield


def init_parameters(module: nn.Module, gen: torch.Generator) -> None:
    """Re-draw the parameters of `module` and every submodule from their default initialization,
    drawing from `gen` (PyTorch's formulas for linear and convolutional layers; norm layers reset
    to ones and zeros)."""
    for m in module.modules():
        own = list(m.parameters(recurse=False))
        if not own:
            continue
        with torch.no_grad():
            if isinstance(m, _EXPLICIT):
                _default_init(m, gen)
            elif isinstance(m, _NORMS):
                m.reset_parameters()
            elif hasattr(m, "reset_parameters"):
                with global_seed(_draw_seed(gen)):
                    m.reset_parameters()
            else:  # raw parameters on a container: small Gaussian, as in many custom layers
                for p in own:
                    p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.02)


def _default_init(m: nn.Module, gen: torch.Generator) -> None:
    """kaiming_uniform_(a=√5) weights and U(-1/√fan_in, 1/√fan_in) biases: nn.Linear's and
    nn.Conv2d's reset_parameters, with a generator."""
    w = m.weight
    fan_in, _ = nn.init._calculate_fan_in_and_fan_out(w)
    bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    w.copy_(_uniform(w, _kaiming_bound(fan_in), gen))
    if m.bias is not None:
        m.bias.copy_(_uniform(m.bias, bound, gen))


def _kaiming_bound(fan_in: int) -> float:
    """kaiming_uniform_ with a = √5 and leaky_relu gain: bound = gain·√(3/fan_in), gain = √(2/(1+a²))."""
    gain = math.sqrt(2.0 / (1 + 5))
    return gain * math.sqrt(3.0 / fan_in) if fan_in > 0 else 0.0


def _uniform(like: torch.Tensor, bound: float, gen: torch.Generator) -> torch.Tensor:
    """U(-bound, bound) drawn on the CPU (a CPU generator cannot fill a CUDA tensor), then moved."""
    out = torch.empty(like.shape, dtype=like.dtype).uniform_(-bound, bound, generator=gen)
    return out.to(like.device)


def _draw_seed(gen: torch.Generator) -> int:
    return int(torch.randint(0, 2**62, (1,), generator=gen))
