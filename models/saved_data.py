"""A user's own `torch.utils.data.Dataset`, kept in the workspace (DataSpec name "saved"), so that
jobs, later sessions and other processes read it without the user's code: the images as uint8
arrays (numpy's .npy, memory-mapped when read, never unpickled), the labels, the class names.

Written by `lenscape.add_model(..., data=dataset)` only. A data set of many large images is better
given as an image folder, which Lenscape decodes on demand (models.image_folders).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from lenscape.errors import InvalidInputError
from lenscape.models.paths import home_dir

DATASET_ID = re.compile(r"[0-9a-f]{16}")
MAX_BYTES = 8 << 30  # of uint8 pixels, both splits together


def datasets_dir() -> Path:
    path = home_dir() / "datasets"
    path.mkdir(parents=True, exist_ok=True)
    return path


def dataset_folder(dataset_id: str) -> Path:
    if not isinstance(dataset_id, str) or not DATASET_ID.fullmatch(dataset_id):
        raise InvalidInputError(f"not a saved data set's id: {str(dataset_id)[:40]!r}")
    return datasets_dir() / dataset_id


def _as_uint8(image, i: int) -> np.ndarray:
    """One image as (C, H, W) uint8: from a tensor or array in [0, 1] (C, H, W), or a PIL image."""
    if hasattr(image, "convert") and hasattr(image, "size"):  # a PIL image
        arr = np.asarray(image.convert("L" if image.mode in ("L", "1", "I;16") else "RGB"), dtype=np.uint8)
        return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    try:
        t = torch.as_tensor(image)
    except (TypeError, ValueError, RuntimeError):
        raise InvalidInputError(
            f"example {i}'s image is a {type(image).__name__}, not a tensor, array or PIL image"
        ) from None
    if t.ndim == 2:
        t = t[None]
    if t.ndim != 3 or t.numel() == 0:
        raise InvalidInputError(f"example {i} is an image of shape {tuple(t.shape)}; expected (C, H, W)")
    if t.is_complex() or t.dtype == torch.bool:
        raise InvalidInputError(f"example {i}'s image is {t.dtype}; expected real values in [0, 1] or uint8")
    if t.dtype == torch.uint8:
        return t.numpy()
    t = t.float()
    lo, hi = float(t.min()), float(t.max())
    if lo < -1e-4 or hi > 1 + 1e-4 or not np.isfinite([lo, hi]).all():
        raise InvalidInputError(
            f"example {i} holds values in [{lo:.3g}, {hi:.3g}]; Lenscape needs images in [0, 1] (ToTensor "
            "without Normalize) and builds the normalization into the model: pass mean=... and std=... "
            "to add_model instead"
        )
    return (t.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def _materialize(dataset, what: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        n = len(dataset)
    except (TypeError, ValueError):
        raise InvalidInputError(f"the {what} data set has no length: give a map-style Dataset") from None
    if n < 1:
        raise InvalidInputError(f"the {what} data set is empty")
    images, labels, shape = None, np.empty(n, dtype=np.int64), None
    for i in range(n):
        item = dataset[i]
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise InvalidInputError(f"the {what} data set's example {i} is not an (image, label) pair")
        arr = _as_uint8(item[0], i)
        if shape is None:
            shape = arr.shape
            if n * arr.size > MAX_BYTES:
                raise InvalidInputError(
                    f"the {what} data set holds {n:,} images of {shape}: over {MAX_BYTES >> 30} GiB. Give "
                    "an image folder instead (decoded on demand)"
                )
            images = np.empty((n, *shape), dtype=np.uint8)
        elif arr.shape != shape:
            raise InvalidInputError(
                f"the {what} data set's images differ in shape: {shape} and {arr.shape} (example {i})"
            )
        images[i] = arr
        labels[i] = _label(item[1], what, i)
    assert images is not None
    return images, labels


MAX_CLASSES = 100_000  # ImageNet-21k has 21,841


def _label(value, what: str, i: int) -> int:
    """A class index from whatever the Dataset returned: an int, a 0-d or one-element tensor or array."""
    try:
        arr = np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value)
        if arr.size != 1 or arr.dtype.kind not in "iub":
            raise ValueError
        label = int(arr.reshape(()))
    except (TypeError, ValueError, OverflowError):
        raise InvalidInputError(
            f"the {what} data set's example {i} has label {str(value)[:40]!r}: labels are class indices 0, 1, ..."
        ) from None
    if not 0 <= label < MAX_CLASSES:
        raise InvalidInputError(
            f"the {what} data set's example {i} has label {label}: labels are class indices 0 to {MAX_CLASSES - 1:,}"
        )
    return label


def save_dataset(train, test=None, classes: tuple[str, ...] | None = None) -> str:
    """Keep a Dataset (or a (train, test) pair) in the workspace; returns its id. One Dataset is split
    80/20 as image folders are (a fixed seeded order). Saving the same data again returns the same id."""
    x_train, y_train = _materialize(train, "training")
    if test is None:
        order = torch.randperm(len(y_train), generator=torch.Generator().manual_seed(0)).numpy()
        cut = max(1, int(0.8 * len(order)))
        (x_train, y_train), (x_test, y_test) = (
            (x_train[order[:cut]], y_train[order[:cut]]),
            (x_train[order[cut:]], y_train[order[cut:]]),
        )
    else:
        x_test, y_test = _materialize(test, "test")
    if len(x_train) < 1 or len(x_test) < 1:
        raise InvalidInputError("a data set needs at least one training and one test example (two or more to split)")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise InvalidInputError(f"training images are {x_train.shape[1:]} and test images {x_test.shape[1:]}")
    n_classes = int(max(y_train.max(), y_test.max())) + 1
    if min(y_train.min(), y_test.min()) < 0:
        raise InvalidInputError("labels must be class indices 0, 1, ...")
    names = tuple(str(c) for c in (classes or getattr(train, "classes", None) or range(n_classes)))
    if len(names) < n_classes:
        raise InvalidInputError(f"{len(names)} class names for labels up to {n_classes - 1}")
    digest = hashlib.sha256()
    for a in (x_train, y_train, x_test, y_test):
        digest.update(np.ascontiguousarray(a).tobytes())
    digest.update(json.dumps(names).encode())
    dataset_id = digest.hexdigest()[:16]
    folder = dataset_folder(dataset_id)
    if (folder / "meta.json").exists():
        return dataset_id
    tmp = Path(tempfile.mkdtemp(dir=datasets_dir(), prefix=".tmp-"))
    try:
        for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
            np.save(tmp / f"{split}-images.npy", x)
            np.save(tmp / f"{split}-labels.npy", y)
        mean = tuple(float(m) for m in (x_train.astype(np.float64) / 255).mean(axis=(0, 2, 3)))
        std = tuple(max(float(s), 1e-3) for s in (x_train.astype(np.float64) / 255).std(axis=(0, 2, 3)))
        (tmp / "meta.json").write_text(json.dumps({"classes": list(names), "mean": mean, "std": std}))
        os.replace(tmp, folder)  # all or nothing
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dataset_id


def load_saved(dataset_id: str, split: str) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...], tuple, tuple]:
    """(images, labels, classes, mean, std) of a saved data set's split; the images memory-mapped."""
    folder = dataset_folder(dataset_id)
    try:
        meta = json.loads((folder / "meta.json").read_text())
        # copy-on-write: a write through the tensor stays in this process (a read-only map would crash it)
        images = np.load(folder / f"{split}-images.npy", mmap_mode="c", allow_pickle=False)
        labels = np.load(folder / f"{split}-labels.npy", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InvalidInputError(
            f"the saved data set {dataset_id} is not in this workspace or cannot be read ({type(exc).__name__}); "
            "add it again with lenscape.add_model(..., data=...)"
        ) from None
    if images.dtype != np.uint8 or images.ndim != 4 or labels.shape != (len(images),):
        raise InvalidInputError(f"the saved data set {dataset_id} is damaged")
    return (
        torch.from_numpy(images),
        torch.from_numpy(labels.astype(np.int64)),
        tuple(map(str, meta["classes"])),
        tuple(meta["mean"]),
        tuple(meta["std"]),
    )
