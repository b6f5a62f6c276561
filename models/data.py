"""Data sets as in-memory uint8 tensors, plus label noise.

Every data set comes back as an `ImageData`: images (N, C, H, W) uint8, labels (N,), the
class names and the normalization the models build in. Indexing returns (x, y, index) so
training can tie dropout masks to examples and views can show which examples were relabelled.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from lenscape.errors import DataUnavailableError, InvalidInputError
from lenscape.models.image_folders import folder_tensors, is_complete, open_folder
from lenscape.models.paths import data_root, offline, user_path

DATASETS = ("digits", "mnist", "cifar10", "blockmnist", "imagefolder", "saved")
Split = Literal["train", "test"]

MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


@dataclass(frozen=True, kw_only=True)
class DataSpec:
    """Which data set, with its options. Its `key()` goes into job keys and run records."""

    name: str = "digits"
    block_classes: tuple[int, int] = (0, 1)  # BlockMNIST: the two MNIST digits; label 0 = first
    block_top_only: bool = False  # BlockMNIST-Top: signal always in the top block
    block_patch: int = 8  # side of the null block's fixed square patch
    folder: str = ""  # ImageFolder root; for "saved", the saved data set's id (models.saved_data)
    image_size: int = 0  # ImageFolder: resize to this square size; 0 = keep

    def __post_init__(self) -> None:
        if self.name not in DATASETS:
            raise InvalidInputError(f"unknown data set {self.name!r}; expected one of {DATASETS}")
        if self.name == "imagefolder" and not self.folder:
            raise InvalidInputError("an ImageFolder data set needs a folder path; got none")
        if self.name == "saved":
            from lenscape.models.saved_data import dataset_folder

            dataset_folder(self.folder)  # an id, never a path
        a, b = self.block_classes
        if self.name == "blockmnist" and (a == b or not (0 <= a <= 9 and 0 <= b <= 9)):
            raise InvalidInputError(f"BlockMNIST needs two different digits 0-9; got {self.block_classes}")
        if not 0 <= self.image_size <= 1024:
            raise InvalidInputError(f"image_size must be 0 (keep) to 1024 pixels; got {self.image_size}")
        if not 0 <= self.block_patch <= 28:
            raise InvalidInputError(f"block_patch must be in [0, 28]; got {self.block_patch}")

    @property
    def label(self) -> str:
        if self.name == "blockmnist":
            a, b = self.block_classes
            return f"BlockMNIST{'-Top' if self.block_top_only else ''} ({a} vs {b})"
        if self.name == "imagefolder":
            return f"ImageFolder {self.folder}"
        if self.name == "saved":
            return f"Your data set {self.folder[:8]}"
        return {"digits": "Digits (scikit-learn, 8x8)", "mnist": "MNIST", "cifar10": "CIFAR-10"}[self.name]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> DataSpec:
        d = dict(d)
        if "block_classes" in d:
            d["block_classes"] = tuple(d["block_classes"])
        return cls(**d)

    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True, eq=False)
class ImageData(Dataset):
    """An image classification split held in memory. x comes out as float in [0, 1]."""

    images: torch.Tensor  # (N, C, H, W) uint8
    labels: torch.Tensor  # (N,) int64
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    spec: DataSpec
    split: str
    signal_top: torch.Tensor | None = None  # BlockMNIST: (N,) bool, True = digit in top block
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.dtype != torch.uint8:
            raise InvalidInputError(
                f"images must be (N, C, H, W) uint8; got {tuple(self.images.shape)} {self.images.dtype}"
            )
        if len(self.images) != len(self.labels):
            raise InvalidInputError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        self._ensure([i])
        return self.images[i].float() / 255.0, int(self.labels[i]), i

    def _ensure(self, index) -> None:
        """A lazily decoded image folder: decode the images `index` picks (all for None) first."""
        ensure = self.extra.get("ensure")
        if ensure is None:
            return
        positions = torch.arange(len(self))
        ensure((positions if index is None else positions[index]).reshape(-1).numpy())

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def x(self, index: torch.Tensor | slice | None = None) -> torch.Tensor:
        """Images as float in [0, 1]; index picks a subset."""
        self._ensure(index)
        imgs = self.images if index is None else self.images[index]
        return imgs.float().div_(255.0)  # (B, C, H, W)

    def with_labels(self, labels: torch.Tensor) -> ImageData:
        return replace(self, labels=labels)

    def with_images(self, images: torch.Tensor) -> ImageData:
        return replace(self, images=images)

    def head(self, n: int) -> ImageData:
        """The first n examples (all of them when n is 0 or larger than the split)."""
        if not n or n >= len(self):
            return self
        top = None if self.signal_top is None else self.signal_top[:n]
        return replace(self, images=self.images[:n], labels=self.labels[:n], signal_top=top)


def is_prepared(spec: DataSpec) -> bool:
    """True when loading `spec` is quick: nothing to decode (image folders are decoded once into
    the cache; `prepare` does that, with progress)."""
    folders = _folders(spec)
    return all(is_complete(root, size, key) for root, size, key in folders)


def _folders(spec: DataSpec) -> list[tuple[Path, int, str | None]]:
    """The image folders `spec` reads, as (root, size, cache key). A folder named by a user (typed,
    in a link or in a bundle) must lie inside the allowed roots."""
    root = data_root()
    if spec.name == "cifar10":
        if (root / "cifar-10-batches-py").is_dir() or not (root / "cifar10-jpg" / "train").is_dir():
            return []
        return [(root / "cifar10-jpg" / s, 0, f"cifar10-jpg-{s}") for s in ("train", "test")]
    if spec.name == "imagefolder":
        folder = user_path(spec.folder, "the image folder")
        if not folder.is_dir():
            return []
        if (folder / "train").is_dir() and (folder / "test").is_dir():
            return [(folder / s, spec.image_size, None) for s in ("train", "test")]
        return [(folder, spec.image_size, SPLIT_KEY)]
    return []


SPLIT_KEY = "split80"  # the cache of a one-tree folder, kept in split order: its training 80 % first


def _split_order(n: int) -> torch.Tensor:
    """A one-tree folder's fixed 80/20 split: a seeded permutation, training part first."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(0))


def _split_cut(n: int) -> int:
    return max(1, int(0.8 * n))


def prepare(spec: DataSpec, progress=None) -> dict:
    """Decode every image folder of `spec` into the cache (progress(fraction, message)); returns
    the number of images per folder."""
    folders = _folders(spec)
    out = {}
    for i, (root, size, key) in enumerate(folders):
        report = None if progress is None else (lambda f, m, i=i: progress((i + f) / len(folders), m))
        order = _split_order if key == SPLIT_KEY else None
        out[str(root)] = len(folder_tensors(root, size, key, report, order)[1])
    return out


def load_data(spec: DataSpec, split: Split, lazy: bool = False) -> ImageData:
    """The split's images and labels. `lazy`: an image folder not decoded yet comes back at once, its
    images decoded as `x(index)` or `data[i]` asks for them (its whole-set `images` are not all there
    yet: for code that reads a few images by index)."""
    if split not in ("train", "test"):
        raise InvalidInputError(f"split must be 'train' or 'test'; got {split!r}")
    if lazy and spec.name == "imagefolder":
        return _imagefolder(spec, split, lazy=True)
    loader = {
        "digits": _digits,
        "mnist": _mnist,
        "cifar10": _cifar10,
        "blockmnist": _blockmnist,
        "imagefolder": _imagefolder,
        "saved": _saved,
    }[spec.name]
    return loader(spec, split)


def _digits(spec: DataSpec, split: str) -> ImageData:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8))[:, None]
    labels = torch.from_numpy(bunch.target.astype(np.int64))
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))
    n_train = 1437  # a fixed 80/20 split, the same on every machine
    idx = order[:n_train] if split == "train" else order[n_train:]
    train = images[order[:n_train]].float() / 255.0
    mean, std = (float(train.mean()),), (float(train.std()),)
    return ImageData(images[idx], labels[idx], tuple(str(d) for d in range(10)), mean, std, spec, split)


def _mnist_tensors(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    import torchvision

    root = data_root()
    try:
        ds = torchvision.datasets.MNIST(str(root), train=split == "train", download=False)
    except RuntimeError:
        ds = _download(
            lambda: torchvision.datasets.MNIST(str(root), train=split == "train", download=True),
            "MNIST",
            [root / "MNIST" / "raw" / f for f in MNIST_FILES],
        )
    return ds.data[:, None].contiguous(), ds.targets.long()


def _mnist(spec: DataSpec, split: str) -> ImageData:
    images, labels = _mnist_tensors(split)
    return ImageData(images, labels, tuple(str(d) for d in range(10)), MNIST_MEAN, MNIST_STD, spec, split)


def _download(fn, name: str, expected: list[Path]):
    where = "\n".join(f"  {p}" for p in expected)
    if offline():
        raise DataUnavailableError(
            f"{name} is not in the data root and downloads are off (LENSCAPE_OFFLINE). Put these files here:\n{where}"
        )
    try:
        return fn()
    except Exception as exc:  # any network failure: tell the user what to put where
        raise DataUnavailableError(
            f"{name} is not in the data root ({data_root()}) and could not be downloaded "
            f"({type(exc).__name__}). Put these files here, or set LENSCAPE_DATA to a folder "
            f"that has them:\n{where}"
        ) from None


def _cifar10(spec: DataSpec, split: str) -> ImageData:
    root = data_root()
    jpg = root / "cifar10-jpg" / split
    if (root / "cifar-10-batches-py").is_dir() or not jpg.is_dir():
        import torchvision

        try:
            ds = torchvision.datasets.CIFAR10(str(root), train=split == "train", download=False)
        except RuntimeError:
            ds = _download(
                lambda: torchvision.datasets.CIFAR10(str(root), train=split == "train", download=True),
                "CIFAR-10",
                [
                    root / "cifar-10-batches-py" / "data_batch_1 ... test_batch",
                    root / "cifar10-jpg" / "{train,test}" / "{class}" / "*.jpg",
                ],
            )
        images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
        labels = torch.tensor(ds.targets, dtype=torch.long)
    else:
        images, labels, classes = folder_tensors(jpg, size=0, cache_key=f"cifar10-jpg-{split}")
        if classes != CIFAR_CLASSES:
            raise InvalidInputError(f"{jpg} should hold the 10 CIFAR-10 class folders; found {classes}")
    return ImageData(images, labels, CIFAR_CLASSES, CIFAR_MEAN, CIFAR_STD, spec, split)


def _imagefolder(spec: DataSpec, split: str, lazy: bool = False) -> ImageData:
    root = user_path(spec.folder, "the image folder")
    if not root.is_dir():
        raise InvalidInputError(f"folder {root} does not exist")
    if (root / "train").is_dir() and (root / "test").is_dir():
        cache, train = open_folder(root / split, spec.image_size), open_folder(root / "train", spec.image_size)
        offset, stop, train_offset, train_stop = 0, len(cache), 0, len(train)
    else:  # one tree: a fixed 80/20 split, kept train-first in the cache, so each split is a view
        cache = train = open_folder(root, spec.image_size, SPLIT_KEY, order=_split_order)
        cut = _split_cut(len(cache))
        offset, stop = (0, cut) if split == "train" else (cut, len(cache))
        train_offset, train_stop = 0, cut
    if stop <= offset:
        raise InvalidInputError(f"the {split} split of {root} has no images")
    # the normalization statistics: of a fixed sample of the training split (the same lazy or not)
    sample = train_offset + _stats_sample(train_stop - train_offset)
    train.ensure(sample)
    mean, std = _channel_stats(train.images()[torch.from_numpy(sample)])
    if not lazy:
        cache.fill()
    extra = {} if lazy is False else {"ensure": lambda positions: cache.ensure(offset + np.asarray(positions))}
    labels = torch.from_numpy(cache.labels[offset:stop])
    return ImageData(cache.images()[offset:stop], labels, cache.classes, mean, std, spec, split, extra=extra)


STATS_SAMPLE = 256  # images of the training split whose pixels give an image folder's mean and std


def _stats_sample(n: int) -> np.ndarray:
    """Which training images give the statistics: all up to STATS_SAMPLE, else a seeded sample, sorted."""
    if n <= STATS_SAMPLE:
        return np.arange(n)
    return np.sort(torch.randperm(n, generator=torch.Generator().manual_seed(0))[:STATS_SAMPLE].numpy())


def _channel_stats(images: torch.Tensor, chunk: int = 512) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of uint8 images in [0, 1] units, a chunk at a time
    (float64 sums: memory bounded whatever the number of images)."""
    c = images.shape[1]
    total, sq, n = torch.zeros(c, dtype=torch.float64), torch.zeros(c, dtype=torch.float64), 0
    for start in range(0, len(images), chunk):
        x = images[start : start + chunk].to(torch.float64).div_(255.0)
        total += x.sum(dim=(0, 2, 3))
        sq += x.square().sum(dim=(0, 2, 3))
        n += x.numel() // c
    mean = total / n
    var = (sq / n - mean.square()).clamp_min(0) * n / max(1, n - 1)
    return tuple(float(m) for m in mean), tuple(max(float(s), 1e-3) for s in var.sqrt())


def _saved(spec: DataSpec, split: str) -> ImageData:
    from lenscape.models.saved_data import load_saved

    images, labels, classes, mean, std = load_saved(spec.folder, split)
    return ImageData(images, labels, classes, mean, std, spec, split)


def _blockmnist(spec: DataSpec, split: str) -> ImageData:
    digits, mnist_labels = _mnist_tensors(split)
    a, b = spec.block_classes
    keep = (mnist_labels == a) | (mnist_labels == b)
    digits, labels = digits[keep], (mnist_labels[keep] == b).long()  # (N, 1, 28, 28)
    n = len(labels)
    if spec.block_top_only:
        signal_top = torch.ones(n, dtype=torch.bool)
    else:  # a fixed seed per split, so the same image always has its signal in the same block
        gen = torch.Generator().manual_seed(0 if split == "train" else 1)
        signal_top = torch.rand(n, generator=gen) < 0.5
    null = null_block(spec.block_patch).expand(n, 1, 28, 28)
    top = torch.where(signal_top[:, None, None, None], digits, null)
    bottom = torch.where(signal_top[:, None, None, None], null, digits)
    images = torch.cat([top, bottom], dim=2).contiguous()  # (N, 1, 56, 28)
    xs = images.float() / 255.0
    return ImageData(
        images, labels, (str(a), str(b)), (float(xs.mean()),), (float(xs.std()),), spec, split, signal_top=signal_top
    )


def null_block(patch: int) -> torch.Tensor:
    """The fixed, label-independent block: a centred white square of side `patch` on black."""
    block = torch.zeros(1, 1, 28, 28, dtype=torch.uint8)
    lo = (28 - patch) // 2
    block[..., lo : lo + patch, lo : lo + patch] = 255
    return block


def null_block_mask(signal_top: torch.Tensor) -> torch.Tensor:
    """(N, 1, 56, 28) bool: True on the coordinates of each image's null block."""
    rows = torch.arange(56)[None, :] >= 28  # (1, 56): bottom half
    null_rows = torch.where(signal_top[:, None], rows, ~rows)  # (N, 56)
    return null_rows[:, None, :, None].expand(-1, 1, 56, 28)


def apply_label_noise(
    labels: torch.Tensor, fraction: float, num_classes: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Relabel floor(fraction * N) examples, as Maini et al. do; returns (labels, noise_mask).

    y <- (y + r) mod C with r uniform over {1, ..., C-2}, so the new label is never the old one
    (and, the paper code's quirk, never y - 1). With two classes r = 1, the only other label.
    """
    if not 0.0 <= fraction < 1.0:
        raise InvalidInputError(f"label-noise fraction must be in [0, 1); got {fraction}")
    n = len(labels)
    rng = np.random.default_rng(seed)
    idx = rng.choice(n, size=int(np.floor(fraction * n)), replace=False)
    high = max(num_classes - 2, 1)
    shifts = rng.integers(1, high + 1, size=len(idx))
    noisy = labels.clone()
    noisy[idx] = (labels[idx] + torch.from_numpy(shifts)) % num_classes
    mask = torch.zeros(n, dtype=torch.bool)
    mask[idx] = True
    return noisy, mask


def stratified(idx: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """`idx` reordered class by class in turn (the first of each class, then the second of each, ...),
    so that a page of a data set stored sorted by class shows a mix of classes."""
    lab = labels[idx]
    rank = np.zeros(len(idx), dtype=np.int64)
    for c in np.unique(lab):
        rank[lab == c] = np.arange(int((lab == c).sum()))
    return idx[np.lexsort((lab, rank))]
