"""Model randomization check (Adebayo et al. 2018): re-initialize layers and watch whether a
method's maps change. A map that survives randomizing the whole network does not explain the model.

Two orders, as in the paper: "cascading" re-initializes the top layer, then the top two, ... down to
the first; "independent" re-initializes one layer at a time with the rest trained. Maps are compared
by Spearman's rank correlation, on absolute or signed values.

What counts as "still similar" depends on the model and the data: maps of two *different* images
under the trained model already correlate (shared layout, empty borders), and so do the maps of two
independently randomized networks (the input and the architecture shape them). Both baselines are
measured in the same call, and a method is flagged only when its randomized maps stay clearly more
similar to the original than the maps of two different images are (see `bar`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from lenscape.analysis.saliency import SaliencyConfig, attribute, to_map
from lenscape.errors import InvalidInputError
from lenscape.models.seeding import generator, init_parameters

ORDERS = ("cascading", "independent")
MAP_MODES = ("abs", "signed")
MARGIN = 0.1  # how far above the different-images baseline a randomized map must stay to be flagged


@dataclass(frozen=True, kw_only=True)
class RandomizationResult:
    method: str
    order: str  # "cascading" or "independent"
    map_mode: str  # "abs" or "signed"
    layers: list[str]  # in the order they are re-initialized (top first)
    maps: np.ndarray  # (L + 1, N, H, W): the original first
    rank_corr: np.ndarray  # (L, N) Spearman ρ with the original map; NaN where a map is constant
    between_images: (
        np.ndarray
    )  # (N,) ρ of image i's map with image i−1's (the last with the first's) under the trained model
    between_random: np.ndarray  # (N,) ρ of two independently randomized networks' maps of image i

    @property
    def floor(self) -> float:
        """Mean ρ between maps of different images: the similarity of unrelated maps."""
        return _nanmean(self.between_images)

    @property
    def bar(self) -> float:
        """Flagged above this: the different-images level (or 0 where unrelated maps anti-correlate, as
        signed maps of different classes do: no correlation is not similarity) plus MARGIN."""
        return max(self.floor, 0.0) + MARGIN

    @property
    def random_level(self) -> float:
        """Mean ρ between two independently randomized networks' maps: what input and architecture give."""
        return _nanmean(self.between_random)

    @property
    def layer_means(self) -> list[float]:
        """Mean ρ with the original map after each step (NaN where every map was constant)."""
        return [_nanmean(r) for r in self.rank_corr]

    @property
    def least_changed(self) -> float:
        """Cascading: mean ρ with every layer randomized. Independent: the lowest mean ρ over the
        layers, i.e. the layer whose randomization moves the map most."""
        means = self.layer_means
        if not means:
            return float("nan")
        return means[-1] if self.order == "cascading" else float(np.nanmin(means))

    @property
    def flagged(self) -> bool:
        """The maps stay similar however the weights are randomized."""
        return bool(self.least_changed > self.bar)


def _nanmean(a) -> float:
    a = np.asarray(a, dtype=float)
    return float(a[np.isfinite(a)].mean()) if np.isfinite(a).any() else float("nan")


def parameter_layers(model: nn.Module) -> list[str]:
    """Modules that own parameters (conv, linear, norm layers), input to output."""
    return [n for n, m in model.named_modules() if n and any(True for _ in m.parameters(recurse=False))]


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Rank correlation per row of (N, ...) tensors, ties given their average rank (as SciPy);
    NaN for a row where either map is constant (it has no ranking)."""
    ra, rb = _average_ranks(a), _average_ranks(b)
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    den = ra.norm(dim=1) * rb.norm(dim=1)
    return torch.where(den > 0, (ra * rb).sum(1) / den.clamp_min(1e-300), torch.full_like(den, float("nan")))


def _average_ranks(a: torch.Tensor) -> torch.Tensor:
    """1-based ranks per row; tied values share the mean of the ranks they span."""
    flat = a.flatten(1).double().contiguous()  # (N, D)
    ordered = flat.sort(1).values
    below = torch.searchsorted(ordered, flat, right=False).double()  # values strictly smaller
    upto = torch.searchsorted(ordered, flat, right=True).double()  # values smaller or equal
    return (below + 1 + upto) / 2


def model_randomization(
    model: nn.Module,
    images: torch.Tensor,
    target: torch.Tensor,
    config: SaliencyConfig,
    order: str = "cascading",
    map_mode: str = "abs",
    seed: int = 0,
) -> RandomizationResult:
    """Maps of `images` for `target` as layers are re-initialized (the model passed in is not changed).

    Args:
        model: the trained classifier; a copy is re-initialized, layer by layer.
        images: (N, C, H, W) floats in [0, 1].
        target: (N,) int64, the class each map explains.
        config: the attribution method and its settings (`attribute`).
        order: "cascading" (default: the top layer, then the top two, ...) or "independent" (one at a time).
        map_mode: "abs" (default) or "signed": how channels are summed into (H, W) maps (`to_map`).
        seed: seeds the re-initializations (layer i with seed + i; the two random twins with others).

    Returns:
        A RandomizationResult: the maps (L + 1, N, H, W), Spearman ρ with the original per layer step
        (L, N), the two baselines, and `flagged` (the maps stay similar however the weights change).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from lenscape.analysis import model_randomization, SaliencyConfig
        >>> _ = torch.manual_seed(0)
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> images, target = torch.rand(4, 1, 4, 4), torch.zeros(4, dtype=torch.long)
        >>> res = model_randomization(net, images, target, SaliencyConfig(method="gradient"))
        >>> res.layers, res.maps.shape, res.rank_corr.shape              # the top layer first
        (['3', '1'], (3, 4, 4, 4), (2, 4))
        >>> res.flagged       # the gradient follows the weights
        False
        >>> model_randomization(net, images, target, SaliencyConfig(method="random")).flagged   # noise does not
        True
    """
    if order not in ORDERS:
        raise InvalidInputError(f"order must be one of {ORDERS}; got {order!r}")
    if map_mode not in MAP_MODES:
        raise InvalidInputError(f"map_mode must be one of {MAP_MODES}; got {map_mode!r}")
    mode: Literal["abs", "signed"] = "signed" if map_mode == "signed" else "abs"  # map_mode is one of MAP_MODES
    trained = copy.deepcopy(model).eval()
    maps_of = lambda m: to_map(attribute(m, images, target, config), mode)  # noqa: E731
    base = maps_of(trained)
    layers = list(reversed(parameter_layers(trained)))
    work, maps, corr = copy.deepcopy(trained), [base], []
    for i, name in enumerate(layers):
        if order == "independent":
            work = copy.deepcopy(trained)
        _reinit(dict(work.named_modules())[name], seed + i)
        maps.append(maps_of(work))
        corr.append(spearman(base, maps[-1]))
    between_images = spearman(base, base.roll(1, 0)) if len(images) > 1 else torch.full((len(images),), float("nan"))
    twins = [randomized(trained, seed + 10_000 * k) for k in (1, 2)]
    between_random = spearman(maps_of(twins[0]), maps_of(twins[1]))
    rank_corr = torch.stack(corr).numpy() if corr else np.zeros((0, len(images)))
    return RandomizationResult(
        method=config.method,
        order=order,
        map_mode=map_mode,
        layers=layers,
        maps=torch.stack(maps).numpy(),
        rank_corr=rank_corr,
        between_images=between_images.numpy(),
        between_random=between_random.numpy(),
    )


def randomized(model: nn.Module, seed: int) -> nn.Module:
    """A copy of `model` with every parameter-owning layer re-initialized."""
    out = copy.deepcopy(model).eval()
    modules = dict(out.named_modules())
    for i, name in enumerate(parameter_layers(out)):
        _reinit(modules[name], seed + i)
    return out


def _reinit(module: nn.Module, seed: int) -> None:
    """Re-draw the module's parameters from their default initialization with a generator seeded
    `seed` (the global RNG, shared with other jobs, is neither used nor changed)."""
    init_parameters(module, generator(seed))
