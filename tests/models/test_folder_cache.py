"""Image folders decoded on demand into a memory-mapped cache (issue 25, point 4): a lazy load decodes
only what is asked for (and the fixed sample the statistics come from), a full load decodes the rest
once, the pixels are PIL's, and the splits are views of one file, never copies."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from lenscape.models import data as data_mod
from lenscape.models.data import DataSpec, load_data, prepare


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(50):
        d = tmp_path / "imgs" / f"class{i % 5}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(d / f"{i:03d}.png")
    return tmp_path / "imgs"


def _cache(spec):
    from lenscape.models.image_folders import open_folder

    return open_folder(
        data_mod.user_path(spec.folder), spec.image_size, data_mod.SPLIT_KEY, order=data_mod._split_order
    )


def test_a_lazy_load_decodes_only_what_is_asked(folder, monkeypatch):
    monkeypatch.setattr(data_mod, "STATS_SAMPLE", 4)
    spec = DataSpec(name="imagefolder", folder=str(folder))
    test = load_data(spec, "test", lazy=True)
    cache = _cache(spec)
    assert len(test) == 10 and cache.done().sum() == 4  # the statistics' sample of the training split
    x = test.x(torch.tensor([0, 3]))
    assert cache.done().sum() == 6 and not cache.complete
    # the pixels are PIL's, at the positions the seeded 80/20 split puts them
    # ImageFolder's order (class folders, then files), permuted by the seeded split: test image i is
    # the folder's image order[40 + i]
    samples = [str(p) for c in sorted(folder.iterdir()) for p in sorted(c.iterdir())]
    order = data_mod._split_order(50)
    for k, i in enumerate([0, 3]):
        want = np.asarray(Image.open(samples[int(order[40 + i])]).convert("RGB")).transpose(2, 0, 1)
        np.testing.assert_array_equal((x[k] * 255).round().byte().numpy(), want)


def test_a_full_load_decodes_everything_once_and_splits_are_views(folder):
    spec = DataSpec(name="imagefolder", folder=str(folder))
    counts = prepare(spec)
    assert sum(counts.values()) == 50
    cache = _cache(spec)
    assert cache.complete and cache.done().all()
    train, test = load_data(spec, "train"), load_data(spec, "test")
    assert len(train) == 40 and len(test) == 10
    whole = 50 * 3 * 12 * 12  # each split is a view of the whole mapped file, not a copy of its part
    assert train.images.untyped_storage().nbytes() == whole == test.images.untyped_storage().nbytes()
    assert torch.equal(torch.cat([train.images, test.images]), cache.images())
    # the labels follow the images: class k's images are the ones in class folder k
    for i in (0, 17, 39):
        assert f"class{int(train.labels[i])}" in cache.samples[i][0]


def test_a_write_through_the_tensor_stays_in_this_process(folder):
    spec = DataSpec(name="imagefolder", folder=str(folder))
    prepare(spec)
    first = load_data(spec, "train")
    before = first.images[0].clone()
    first.images[0].zero_()  # copy-on-write: the file keeps its pixels
    assert torch.equal(_cache(spec).images()[0], before)


def test_statistics_are_the_same_lazy_or_not(folder):
    spec = DataSpec(name="imagefolder", folder=str(folder))
    lazy = load_data(spec, "test", lazy=True)
    full = load_data(spec, "test")
    assert lazy.mean == full.mean and lazy.std == full.std
    x = torch.cat([load_data(spec, "train").images]).double() / 255
    np.testing.assert_allclose(full.mean, x.mean(dim=(0, 2, 3)).numpy(), rtol=1e-9)
    np.testing.assert_allclose(full.std, x.std(dim=(0, 2, 3)).numpy(), rtol=1e-6)
