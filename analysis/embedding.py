"""2-D projections of activations: UMAP (umap-learn) and PCA (scikit-learn)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lenscape.errors import InvalidInputError

UMAP_METRICS = ("euclidean", "cosine", "correlation", "manhattan")


@dataclass(frozen=True, kw_only=True)
class ProjectionConfig:
    method: str = "umap"  # "umap" or "pca"
    n_neighbors: int = 15  # UMAP: local vs global structure (umap-learn's default)
    min_dist: float = 0.1  # UMAP: how tightly points pack (umap-learn's default)
    metric: str = "euclidean"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in ("umap", "pca"):
            raise InvalidInputError(f"projection must be 'umap' or 'pca'; got {self.method!r}")
        if self.n_neighbors < 2 or not 0 <= self.min_dist <= 1 or self.metric not in UMAP_METRICS:
            raise InvalidInputError(f"need n_neighbors >= 2, 0 <= min_dist <= 1, metric in {UMAP_METRICS}; got {self}")


@dataclass(frozen=True, kw_only=True)
class Projection:
    coords: np.ndarray  # (N, 2)
    explained: np.ndarray | None  # PCA: explained-variance ratio of the two axes
    config: ProjectionConfig


def project(acts: np.ndarray, config: ProjectionConfig) -> Projection:
    """A 2-D map of activations, one point per example: UMAP (umap-learn; compiled by numba on its
    first use) or PCA (scikit-learn), seeded by ``config.seed``.

    Args:
        acts: (N, ...) activations, N >= 5, flattened to (N, D); NaN or infinite values are refused.
        config: the method ("umap" or "pca") and UMAP's n_neighbors (capped at N − 1), min_dist and metric.

    Returns:
        A Projection: coords (N, 2), and for PCA the explained-variance ratio of the two axes (None for UMAP).

    Example:
        >>> import torch
        >>> from lenscape.analysis import project, ProjectionConfig
        >>> _ = torch.manual_seed(0)
        >>> acts = torch.rand(50, 2) @ torch.rand(2, 10)    # 10 features that span a plane
        >>> p = project(acts.numpy(), ProjectionConfig(method="pca"))
        >>> p.coords.shape, round(float(p.explained.sum()), 4)   # two axes hold all of the variance
        ((50, 2), 1.0)
    """
    a = np.asarray(acts, dtype=np.float32).reshape(len(acts), -1)
    if len(a) < 5:
        raise InvalidInputError(f"a projection needs at least 5 examples; got {len(a)}")
    if not np.isfinite(a).all():
        raise InvalidInputError("activations hold NaN or infinite values")
    if config.method == "pca":
        from sklearn.decomposition import PCA

        pca = PCA(n_components=2, random_state=config.seed)
        return Projection(coords=pca.fit_transform(a), explained=pca.explained_variance_ratio_, config=config)
    umap = _umap()
    reducer = umap.UMAP(
        n_neighbors=min(config.n_neighbors, len(a) - 1),
        min_dist=config.min_dist,
        metric=config.metric,
        random_state=config.seed,
        n_components=2,
    )
    return Projection(coords=reducer.fit_transform(a), explained=None, config=config)


def _umap():
    """umap-learn, with numba's on-disk cache turned on for its compiled functions.

    umap-learn compiles most of its functions with numba without `cache=True`, so every new process (a
    server restart, each job worker, each test process) compiled them again: 9 s of a 9.6 s first
    projection of 500 points on this machine, 0.6 s once cached. numba keys its cache by source file, types
    and CPU, and keeps it beside umap's own `__pycache__` (or in the user's cache folder where that is read
    only), as Python keeps byte code. The coordinates are the same either way (tests/analysis/test_embedding.py).
    """
    import umap
    import umap.layouts
    import umap.spectral
    import umap.umap_
    import umap.utils

    global _umap_cached
    if not _umap_cached:
        from numba.core.registry import CPUDispatcher

        for module in (umap.umap_, umap.layouts, umap.utils, umap.spectral, umap.distances, umap.sparse):
            for fn in list(vars(module).values()):
                if isinstance(fn, CPUDispatcher) and type(fn._cache).__name__ == "NullCache":
                    try:
                        fn.enable_caching()
                    except Exception:  # noqa: BLE001 - a function numba cannot cache is compiled as before
                        pass
        _umap_cached = True
    return umap


_umap_cached = False
