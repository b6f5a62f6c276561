"""Lenscape's methods as plain functions, for notebooks and scripts: no Streamlit, no workspace, no jobs.

Every function takes a live ``torch.nn.Module`` and tensors, and returns tensors, arrays or small
dataclasses. The app's jobs call these same functions.

Conventions, the same everywhere:

- ``model`` comes first; then the data: ``images`` (N, C, H, W) as floats in [0, 1] (uint8 is accepted
  where said) and ``labels`` (N,) true classes, or ``target`` (N,) the classes to explain; then what
  the method varies (layers, directions, states); then ``config``, the method's settings dataclass.
- ``batch_size`` and ``progress`` (a ``progress(fraction, message)`` callable) are keyword options.
- Bad input raises ``lenscape.errors.InvalidInputError`` with a message a user can act on.
- Randomness comes from a seed in the config: the same call gives the same answer.

Example (CKA between two layers of two networks, then a saliency map)::

    >>> import torch
    >>> from torch import nn
    >>> from lenscape.analysis import extract, linear_cka, compute_saliency, SaliencyConfig
    >>> torch.manual_seed(0) and None
    >>> a = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    >>> b = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    >>> images = torch.rand(100, 1, 8, 8)
    >>> acts_a, acts_b = extract(a, images, ["2"])["2"], extract(b, images, ["2"])["2"]
    >>> 0 < linear_cka(acts_a, acts_b) < 1 and abs(linear_cka(acts_a, acts_a) - 1) < 1e-9
    True
    >>> maps = compute_saliency(a, images[:4], torch.zeros(4, dtype=torch.long), SaliencyConfig(method="gradient"))
    >>> maps.attributions.shape
    (4, 1, 8, 8)

Names are imported on first use, so ``import lenscape.analysis`` itself is quick.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    # evaluation and activations
    "evaluate": "evaluation",
    "Evaluation": "evaluation",
    "extract": "activations",
    "hidden_layers": "activations",
    "conv_to_matrix": "hooks",
    # saliency (Shah, Jain & Netrapalli 2021; Captum underneath)
    "compute_saliency": "saliency",
    "attribute": "saliency",
    "SaliencyConfig": "saliency",
    "SaliencyResult": "saliency",
    "METHODS": "saliency",
    "to_map": "saliency",
    "suggest_gradcam_layer": "saliency",
    # whether the maps can be trusted
    "null_mass": "saliency",
    "null_mass_at_k": "saliency",
    "NullMass": "saliency",
    "diffroar": "roar",
    "DiffRoarConfig": "roar",
    "DiffRoarResult": "roar",
    "keep_mask": "roar",
    "model_randomization": "sanity",
    "RandomizationResult": "sanity",
    # level sets (Balasubramanian et al. 2023)
    "level_set_traversal": "level_sets",
    "LSTConfig": "level_sets",
    "LSTResult": "level_sets",
    "triangle": "level_sets",
    "Triangle": "level_sets",
    "ssim": "level_sets",
    # memorization (Maini et al. 2023)
    "layer_groups": "memorization",
    "gradient_account": "memorization",
    "GradientAccount": "memorization",
    "rewound": "memorization",
    "retrain_group": "memorization",
    "RetrainConfig": "memorization",
    "flip_neurons": "memorization",
    "FlipConfig": "memorization",
    "memorization_curves": "memorization",
    "MemorizationCurves": "memorization",
    "tied_dropout_accuracies": "memorization",
    # similarity (Raghu et al. 2017; Morcos et al. 2018; Kornblith et al. 2019) and projections
    "linear_cka": "similarity",
    "rbf_cka": "similarity",
    "debiased_cka": "similarity",
    "cca": "similarity",
    "svcca": "similarity",
    "pwcca": "similarity",
    "METRICS": "similarity",
    "pairwise_scores": "similarity",
    "seed_matrix": "similarity",
    "SeedMatrix": "similarity",
    "project": "embedding",
    "ProjectionConfig": "embedding",
    # loss landscapes (Li et al. 2018) and curvature
    "random_directions": "landscape",
    "DirectionConfig": "landscape",
    "surface": "landscape",
    "interpolation": "landscape",
    "trajectory": "landscape",
    "recompute_bn_statistics": "landscape",
    "hessian_top_eigenvalues": "hessian",
    "hessian_extremes": "hessian",
    "hessian_trace": "hessian",
    "spectral_density": "hessian",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'lenscape.analysis' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"lenscape.analysis.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
