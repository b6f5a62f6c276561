"""ROAR's masks and paired differences, and the PCA projection, against references written here
(NumPy sorts and SVD, hand-counted pairs)."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lenscape.analysis.embedding import ProjectionConfig, project
from lenscape.analysis.roar import DiffRoarConfig, apply_keep_mask, keep_mask, pairwise_differences
from lenscape.errors import InvalidInputError


def test_keep_mask_counts_and_pairwise_differences():
    attr = torch.arange(24.0).view(1, 2, 3, 4)
    top, bottom = keep_mask(attr, 0.25, "top"), keep_mask(attr, 0.25, "bottom")
    assert int(top.sum()) == 6 and top.flatten()[-6:].all() and bottom.flatten()[:6].all()
    assert top.shape == attr.shape and top.dtype == torch.bool
    mean, std = pairwise_differences(np.array([[0.9, 0.8]]), np.array([[0.5, 0.7]]))
    diffs = np.array([0.4, 0.2, 0.3, 0.1])
    assert mean.tolist() == pytest.approx([diffs.mean()]) and std.tolist() == pytest.approx([diffs.std()])
    with pytest.raises(InvalidInputError, match="'top' or 'bottom'"):
        keep_mask(attr, 0.25, "middle")


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.sampled_from([0.01, 0.1, 0.25, 0.5, 1.0]))
def test_keep_mask_keeps_the_largest_absolute_values_per_image(seed, k):
    g = torch.Generator().manual_seed(seed)
    attr = torch.randn(3, 2, 5, 5, generator=g)  # distinct values almost surely
    mask = keep_mask(attr, k, "top")
    n = max(1, int(round(k * 50)))
    for i in range(3):
        values = attr[i].abs().flatten().numpy()
        expected = np.zeros(50, dtype=bool)
        expected[np.argsort(-values)[:n]] = True
        assert (mask[i].flatten().numpy() == expected).all()
    bottom = keep_mask(attr, k, "bottom")
    assert (bottom.flatten(1).sum(1) == n).all()
    if n < 25:
        assert not (mask & bottom).any()


def test_apply_keep_mask_fills_the_rest():
    images = torch.arange(8, dtype=torch.uint8).view(1, 2, 2, 2)
    mask = torch.tensor([True, False] * 4).view(1, 2, 2, 2)
    out = apply_keep_mask(images, mask, 99)
    assert out.flatten().tolist() == [0, 99, 2, 99, 4, 99, 6, 99] and out.dtype == torch.uint8


def test_diffroar_config_validates():
    assert "random" in DiffRoarConfig(methods=("gradient",)).all_methods
    for bad in ({"k_grid": ()}, {"k_grid": (0.0,)}, {"k_grid": (1.5,)}, {"seeds": ()}, {"epochs": 0}):
        with pytest.raises(InvalidInputError):
            DiffRoarConfig(**bad)


def test_pca_projection_equals_the_top_two_principal_directions_by_svd():
    g = np.random.default_rng(0)
    acts = g.normal(size=(40, 6)) * np.array([5.0, 3.0, 1.0, 0.5, 0.2, 0.1]) + 2.0
    proj = project(acts, ProjectionConfig(method="pca"))
    centred = acts - acts.mean(0)
    u, s, vt = np.linalg.svd(centred, full_matrices=False)
    ref = centred @ vt[:2].T
    signs = np.sign((proj.coords * ref).sum(0))  # a component's sign is arbitrary
    assert np.allclose(proj.coords * signs, ref, atol=1e-3)
    assert np.allclose(proj.explained, (s[:2] ** 2) / (s**2).sum(), atol=1e-5)
    assert proj.coords.shape == (40, 2) and proj.config.method == "pca"


def test_projection_refuses_too_few_or_non_finite_examples():
    with pytest.raises(InvalidInputError, match="at least 5"):
        project(np.zeros((4, 3)), ProjectionConfig(method="pca"))
    bad = np.ones((10, 3))
    bad[2, 1] = np.nan
    with pytest.raises(InvalidInputError, match="NaN"):
        project(bad, ProjectionConfig(method="pca"))
    with pytest.raises(InvalidInputError):
        ProjectionConfig(method="tsne")
    with pytest.raises(InvalidInputError):
        ProjectionConfig(n_neighbors=1)


def test_umap_projection_is_umap_learns_own_and_its_compiled_code_is_cached_on_disk(tmp_path):
    """`project` turns on numba's disk cache for umap-learn (it compiled again in every process); the
    coordinates equal umap-learn's own, computed in a process that never turned the cache on."""
    import subprocess
    import sys

    acts = np.random.default_rng(3).normal(size=(60, 8)).astype(np.float32)
    np.save(tmp_path / "acts.npy", acts)
    script = (
        "import numpy as np, umap, sys\n"
        "a = np.load(sys.argv[1])\n"
        "c = umap.UMAP(n_neighbors=10, min_dist=0.3, metric='cosine', random_state=4, n_components=2).fit_transform(a)\n"
        "np.save(sys.argv[2], c)\n"
    )
    subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "acts.npy"), str(tmp_path / "ref.npy")], check=True, timeout=300
    )
    proj = project(acts, ProjectionConfig(method="umap", n_neighbors=10, min_dist=0.3, metric="cosine", seed=4))
    assert np.array_equal(proj.coords, np.load(tmp_path / "ref.npy")) and proj.explained is None
    import umap.layouts

    assert type(umap.layouts._nb_optimize_layout_euclidean_single_epoch._cache).__name__ != "NullCache"
