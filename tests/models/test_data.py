import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import has_data
from lenscape.models.data import CIFAR_CLASSES, DataSpec, apply_label_noise, load_data, null_block, null_block_mask
from lenscape.errors import DataUnavailableError, InvalidInputError


def test_digits_split_shapes_and_labels():
    train, test = load_data(DataSpec(name="digits"), "train"), load_data(DataSpec(name="digits"), "test")
    assert train.images.shape == (1437, 1, 8, 8) and test.images.shape == (360, 1, 8, 8)
    assert train.images.dtype == torch.uint8 and int(train.images.max()) == 255
    assert set(train.labels.tolist()) == set(range(10))
    x, y, i = train[5]
    assert x.shape == (1, 8, 8) and 0 <= float(x.min()) and float(x.max()) <= 1 and i == 5
    assert y == int(train.labels[5])


@pytest.mark.skipif(not has_data("mnist"), reason="needs MNIST in LENSCAPE_DATA")
def test_mnist_shapes_and_label_order():
    train, test = load_data(DataSpec(name="mnist"), "train"), load_data(DataSpec(name="mnist"), "test")
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert train.labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert test.labels[:5].tolist() == [7, 2, 1, 0, 4]
    assert train.mean == (0.1307,)


@pytest.mark.skipif(not has_data("cifar10"), reason="needs CIFAR-10 in LENSCAPE_DATA")
def test_cifar10_imagefolder_layout():
    test = load_data(DataSpec(name="cifar10"), "test")
    assert test.images.shape == (10000, 3, 32, 32)
    assert test.classes == CIFAR_CLASSES
    assert torch.bincount(test.labels).tolist() == [1000] * 10


@pytest.mark.skipif(not has_data("mnist"), reason="needs MNIST in LENSCAPE_DATA")
@pytest.mark.parametrize("top_only", [False, True])
def test_blockmnist_blocks_and_signal_positions(top_only):
    data = load_data(DataSpec(name="blockmnist", block_classes=(3, 7), block_top_only=top_only), "train")
    mnist = load_data(DataSpec(name="mnist"), "train")
    keep = (mnist.labels == 3) | (mnist.labels == 7)
    assert data.images.shape == (int(keep.sum()), 1, 56, 28)
    assert data.labels.tolist() == (mnist.labels[keep] == 7).long().tolist()
    top, bottom = data.images[:, :, :28], data.images[:, :, 28:]
    signal = torch.where(data.signal_top[:, None, None, None], top, bottom)
    null = torch.where(data.signal_top[:, None, None, None], bottom, top)
    assert torch.equal(signal, mnist.images[keep])  # the digit sits where signal_top says
    assert torch.equal(null, null_block(8).expand_as(null))  # the other block is the fixed patch
    frac_top = float(data.signal_top.float().mean())
    assert frac_top == 1.0 if top_only else 0.45 < frac_top < 0.55
    mask = null_block_mask(data.signal_top[:4])
    assert mask.shape == (4, 1, 56, 28) and mask.sum(dim=(1, 2, 3)).tolist() == [28 * 28] * 4
    assert bool(mask[0, 0, 0, 0]) == (not bool(data.signal_top[0]))


@pytest.mark.parametrize("fraction,classes", [(0.1, 10), (0.25, 10), (0.2, 2)])
def test_label_noise_flips_exact_fraction_never_same(fraction, classes):
    labels = torch.randint(0, classes, (1001,), generator=torch.Generator().manual_seed(1))
    noisy, mask = apply_label_noise(labels, fraction, classes, seed=3)
    assert int(mask.sum()) == int(np.floor(fraction * 1001))
    assert torch.all(noisy[mask] != labels[mask])
    assert torch.equal(noisy[~mask], labels[~mask])
    if classes > 2:  # the paper's quirk: never y - 1
        assert torch.all(noisy[mask] != (labels[mask] - 1) % classes)
    again, mask2 = apply_label_noise(labels, fraction, classes, seed=3)
    assert torch.equal(again, noisy) and torch.equal(mask, mask2)


def _write_folder(root, sizes):
    for cls, size in sizes:
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(5):
            arr = np.full((size, size, 3), 40 * i, dtype=np.uint8)
            Image.fromarray(arr).save(root / cls / f"{i}.png")


def test_imagefolder_loads_splits_and_resizes(tmp_path):
    _write_folder(tmp_path, [("cat", 12), ("dog", 12)])
    train = load_data(DataSpec(name="imagefolder", folder=str(tmp_path)), "train")
    test = load_data(DataSpec(name="imagefolder", folder=str(tmp_path)), "test")
    assert train.classes == ("cat", "dog") and len(train) == 8 and len(test) == 2
    assert train.images.shape[1:] == (3, 12, 12)
    resized = load_data(DataSpec(name="imagefolder", folder=str(tmp_path), image_size=6), "train")
    assert resized.images.shape[1:] == (3, 6, 6)


def test_imagefolder_bad_input_messages(tmp_path):
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(InvalidInputError, match="no images found"):
        load_data(DataSpec(name="imagefolder", folder=str(tmp_path / "empty")), "train")
    _write_folder(tmp_path / "mixed", [("a", 12), ("b", 16)])
    with pytest.raises(InvalidInputError, match="differ in size"):
        load_data(DataSpec(name="imagefolder", folder=str(tmp_path / "mixed")), "train")
    with pytest.raises(InvalidInputError, match="does not exist"):
        load_data(DataSpec(name="imagefolder", folder=str(tmp_path / "nope")), "train")
    with pytest.raises(InvalidInputError, match="two different digits"):
        DataSpec(name="blockmnist", block_classes=(4, 4))


def test_missing_mnist_names_the_files(tmp_path, monkeypatch):
    monkeypatch.setenv("LENSCAPE_DATA", str(tmp_path))
    monkeypatch.setenv("LENSCAPE_OFFLINE", "1")
    with pytest.raises(DataUnavailableError) as err:
        load_data(DataSpec(name="mnist"), "train")
    assert str(tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte") in str(err.value)


def test_image_folders_are_decoded_once_and_a_new_image_is_noticed(tmp_path):
    from lenscape.models.data import is_prepared, prepare

    _write_folder(tmp_path / "imgs", [("cat", 12), ("dog", 12)])
    spec = DataSpec(name="imagefolder", folder=str(tmp_path / "imgs"))
    assert not is_prepared(spec)
    seen = []
    assert prepare(spec, lambda f, m: seen.append((f, m))) == {str(tmp_path / "imgs"): 10}
    assert seen and seen[0][0] == 0.0 and "decoding imgs" in seen[0][1]
    assert is_prepared(spec)
    first = load_data(spec, "train")
    Image.fromarray(np.zeros((12, 12, 3), dtype=np.uint8)).save(tmp_path / "imgs" / "dog" / "new.png")
    assert not is_prepared(spec)  # a new image: decoded again
    prepare(spec)
    assert len(load_data(spec, "train")) + len(load_data(spec, "test")) == 11 and len(first) == 8
    assert is_prepared(DataSpec(name="digits"))  # nothing to decode
