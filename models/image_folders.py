"""Image folders (root/<class>/**/<image>) read into uint8 tensors, with bounds on the way.

The walk is our own, not torchvision's ImageFolder (which follows symlinks into loops forever): it
enters no folder that links back to one above it, counts every entry against
LENSCAPE_MAX_FOLDER_FILES, and reports progress as it goes (a job's progress raises when the user
cancels). Every image's header is read before any is decoded: one over LENSCAPE_MAX_IMAGE_PIXELS is
refused by name, and grayscale vs RGB is decided over all of them. The order is ImageFolder's
(sorted class folders; within a class, folders in sorted path order and each one's files sorted),
with its extensions, so tensors cached and results made before stay the same.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from lenscape.errors import InvalidInputError
from lenscape.models.paths import cache_dir

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
GRAY_MODES = {"L", "1", "I;16"}
REPORT_EVERY = 256  # entries or images between progress calls (each one a chance to cancel)


def max_folder_files() -> int:
    return _env_int("LENSCAPE_MAX_FOLDER_FILES", 200_000)  # files and folders listed under one root


def max_image_pixels() -> int:
    return _env_int("LENSCAPE_MAX_IMAGE_PIXELS", 25_000_000)  # 5000×5000; decoded as RGB: 75 MB


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name, "").strip().replace("_", "")
    if not text:
        return default
    if not text.isdigit() or int(text) == 0:
        raise InvalidInputError(f"{name} must be a positive whole number; got {os.environ[name]!r}")
    return int(text)


class _Walk:
    """Lists the entries of folders under `root`, counting them against the bound and reporting."""

    def __init__(self, root: Path, progress=None) -> None:
        self.root, self.progress, self.limit, self.seen = root, progress, max_folder_files(), 0

    def entries(self, folder: str) -> list[os.DirEntry]:
        try:
            with os.scandir(folder) as listing:
                return [self._count(entry) for entry in listing]
        except OSError as exc:
            raise InvalidInputError(
                f"cannot read the folder {_rel(folder, self.root)} in {self.root} "
                f"({exc.strerror or type(exc).__name__})"
            ) from None

    def _count(self, entry: os.DirEntry) -> os.DirEntry:
        self.seen += 1
        if self.seen > self.limit:
            raise InvalidInputError(
                f"{self.root} holds more than {self.limit:,} files and folders, the most "
                "Lenscape lists in an image folder; choose a smaller folder, or have the "
                "person who starts the server raise LENSCAPE_MAX_FOLDER_FILES"
            )
        if self.progress is not None and self.seen % REPORT_EVERY == 0:
            self.progress(0.0, f"decoding {self.root.name}: listing files ({self.seen:,} so far)")
        return entry

    def images(self, top: str) -> list[str]:
        """The image files under `top`, in ImageFolder's order. A folder that is (a link to) one above
        it is not entered again: that is a loop."""
        found, stack = [], [(top, frozenset({_inode(str(self.root)), _inode(top)}))]
        while stack:
            folder, above = stack.pop()
            entries = self.entries(folder)
            found.append((folder, sorted(e.path for e in entries if _is_image(e))))
            for e in entries:
                key = _inode(e.path) if _is_dir(e) else None
                if key is not None and key not in above:
                    stack.append((e.path, above | {key}))
        return [path for _, paths in sorted(found) for path in paths]


def _inode(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def _is_image(entry: os.DirEntry) -> bool:
    try:
        return entry.name.lower().endswith(IMG_EXTENSIONS) and entry.is_file()
    except OSError:
        return False


def _rel(path: str, root: Path) -> str:
    return os.path.relpath(path, root)


def list_images(root: Path, progress=None) -> tuple[list[tuple[str, int]], tuple[str, ...]]:
    """(image path, class index) for every image under root/<class>/, and the class names."""
    walk = _Walk(root, progress)
    if progress is not None:
        progress(0.0, f"decoding {root.name}: listing files")
    classes = sorted(e.name for e in walk.entries(str(root)) if _is_dir(e))
    per_class = [walk.images(os.path.join(root, c)) for c in classes]
    empty = [c for c, files in zip(classes, per_class) if not files]
    if not classes or empty:
        which = f" (none in {', '.join(empty[:5])}{' ...' if len(empty) > 5 else ''})" if empty else ""
        raise InvalidInputError(
            f"no images found in {root}{which}: expected {root}/<class>/<image> in every "
            f"class folder, the image ending in one of {' '.join(IMG_EXTENSIONS)}"
        )
    return [(path, label) for label, files in enumerate(per_class) for path in files], tuple(classes)


def _unreadable(path: str, root: Path, exc: Exception) -> InvalidInputError:
    return InvalidInputError(
        f"{_rel(path, root)} in {root} cannot be read as an image ({type(exc).__name__}: "
        f"{str(exc)[:120]}); remove or replace it"
    )


def _header(path: str, root: Path, limit: int) -> str:
    """The image's mode, from its header alone; refused by name when it has over `limit` pixels."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            (w, h), mode = im.size, im.mode
    except Exception as exc:  # noqa: BLE001 - PIL raises many kinds (OSError, SyntaxError, struct.error, ...)
        raise _unreadable(path, root, exc) from None
    if w * h > limit:
        raise InvalidInputError(
            f"{_rel(path, root)} in {root} is {w:,}×{h:,} pixels; images of at most {limit:,} "
            "pixels are read (the person who starts the server can raise "
            "LENSCAPE_MAX_IMAGE_PIXELS)"
        )
    return mode


def _image_mode(samples: list[tuple[str, int]], root: Path, progress=None) -> str:
    """'L' when every image is grayscale, else 'RGB'; every image's size checked before any is decoded."""
    limit, modes = max_image_pixels(), set()
    for i, (path, _) in enumerate(samples):
        if progress is not None and i % REPORT_EVERY == 0:
            progress(0.1 * i / len(samples), f"decoding {root.name}: reading headers {i:,}/{len(samples):,}")
        modes.add(_header(path, root, limit))
    return "L" if modes <= GRAY_MODES else "RGB"


def _decode(path: str, root: Path, mode: str, size: int) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert(mode)
            if size:
                im = im.resize((size, size), Image.BILINEAR)
            return np.asarray(im, dtype=np.uint8)
    except Exception as exc:  # noqa: BLE001 - a damaged image fails in the decoder with anything
        raise _unreadable(path, root, exc) from None


def decode_folder(root: Path, size: int, progress=None) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Images (N, C, H, W) uint8, labels (N,) and class names of the tree under `root`."""
    samples, classes = list_images(root, progress)
    mode, arrays = _image_mode(samples, root, progress), []
    for i, (path, _) in enumerate(samples):
        if progress is not None and i % REPORT_EVERY == 0:
            progress(0.1 + 0.9 * i / len(samples), f"decoding {root.name}: {i:,}/{len(samples):,} images")
        arr = _decode(path, root, mode, size)
        if arrays and arr.shape != arrays[0].shape:
            raise InvalidInputError(
                f"images differ in size: {_rel(samples[0][0], root)} is {arrays[0].shape[:2]}, "
                f"{_rel(path, root)} is {arr.shape[:2]}; choose an image size to resize them to"
            )
        arrays.append(arr)
    stack = np.stack(arrays)
    images = stack[:, None] if stack.ndim == 3 else stack.transpose(0, 3, 1, 2)
    return images, np.array([label for _, label in samples], dtype=np.int64), classes


def folder_cache(root: Path, size: int, cache_key: str | None = None) -> Path:
    """Where the decoded tensors of an image folder are kept. The name stamps each class folder's
    name, modification time and number of entries (adding, removing or renaming an image changes
    them) without a stat of every file: checking the cache costs milliseconds."""
    try:
        dirs = sorted((d for d in os.scandir(root) if d.is_dir()), key=lambda d: d.name)
        parts = [str(Path(root).resolve())] + [
            f"{d.name}:{d.stat().st_mtime_ns}:{len(os.listdir(d.path))}" for d in dirs
        ]
    except OSError as exc:
        raise InvalidInputError(f"cannot read the folder {root} ({exc.strerror or type(exc).__name__})") from None
    stamp = hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]
    return cache_dir("folders") / f"{cache_key or 'folder'}-{size}-{stamp}.npz"


def folder_tensors(root: Path, size: int, cache_key: str | None = None, progress=None):
    """(images, labels, classes) of an image folder as tensors, decoded once: afterwards they come
    from a tensor file in the cache (see folder_cache)."""
    cache = folder_cache(root, size, cache_key)
    if cache.exists():
        try:
            with np.load(cache, allow_pickle=False) as z:
                return torch.from_numpy(z["images"]), torch.from_numpy(z["labels"]), tuple(z["classes"].tolist())
        except (OSError, ValueError, KeyError):  # a damaged cache file: decode again
            cache.unlink(missing_ok=True)
    images, labels, classes = decode_folder(root, size, progress)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, images=images, labels=labels, classes=np.array(classes))
    os.replace(tmp, cache)  # atomic: a reader never sees half a cache file
    return torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels), classes
