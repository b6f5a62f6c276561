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
import math
import os
import threading
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


def _header(path: str, root: Path, limit: int) -> tuple[str, tuple[int, int]]:
    """The image's mode and (w, h), from its header alone; refused by name when it has over `limit` pixels."""
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
    return mode, (w, h)


def _image_mode(samples: list[tuple[str, int]], root: Path, progress=None) -> tuple[str, tuple[int, int] | None, str]:
    """('L' when every image is grayscale, else 'RGB'; (w, h) when all have one size, else None; and
    where they differ, which two), from every image's header (checked against the pixel limit)
    before any is decoded."""
    limit, modes, first, odd = max_image_pixels(), set(), None, ""
    for i, (path, _) in enumerate(samples):
        if progress is not None and i % REPORT_EVERY == 0:
            progress(0.1 * i / len(samples), f"decoding {root.name}: reading headers {i:,}/{len(samples):,}")
        mode, size = _header(path, root, limit)
        modes.add(mode)
        if first is None:
            first = (path, size)
        elif not odd and size != first[1]:
            odd = f"{_rel(first[0], root)} is {first[1][0]}×{first[1][1]}, {_rel(path, root)} is {size[0]}×{size[1]}"
    same = None if odd or first is None else first[1]
    return ("L" if modes <= GRAY_MODES else "RGB"), same, odd


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


class FolderCache:
    """An image folder decoded on demand into a memory-mapped file at one size (N, C, H, W uint8):
    `ensure(positions)` decodes the images not yet there (the first page of a view costs a page of
    decoding, whatever N), `fill(progress)` decodes the rest, and `images()` maps the file, so memory
    stays bounded however many images the folder holds. Several processes may fill one cache: an image
    decodes to the same bytes whoever writes it.

    `order` (a permutation of the folder's ImageFolder order) sets which image sits at each position:
    a folder split 80/20 is kept train-first, so each split is a slice (a view, never a copy)."""

    def __init__(self, root: Path, size: int, cache_key: str | None = None, order=None, progress=None) -> None:
        self.root, self.size = Path(root), size
        self.stem = folder_cache(root, size, cache_key).with_suffix("")
        samples, self.classes = list_images(self.root, progress)
        order = np.arange(len(samples)) if order is None else np.asarray(order(len(samples)))
        self.samples = [samples[i] for i in order]
        self.labels = np.array([label for _, label in self.samples], dtype=np.int64)
        meta_path = self.stem.with_suffix(".json")
        meta = _read_meta(meta_path, len(self.samples))
        if meta is None:
            mode, same, odd = _image_mode(self.samples, self.root, progress)
            if not size and same is None:
                raise InvalidInputError(f"images differ in size: {odd}; choose an image size to resize them to")
            w, h = (size, size) if size else same  # type: ignore[misc]
            meta = {"n": len(self.samples), "mode": mode, "shape": [1 if mode == "L" else 3, h, w]}
            _write_atomic(meta_path, json.dumps(meta).encode())
        self.mode, self.shape = meta["mode"], tuple(meta["shape"])
        self.data_path, self.done_path = self.stem.with_suffix(".u8"), self.stem.with_suffix(".done")
        nbytes = len(self.samples) * math.prod(self.shape)
        for path, length in ((self.data_path, nbytes), (self.done_path, len(self.samples))):
            with open(path, "ab") as f:  # created sparse at its full length; nothing decoded yet
                if f.tell() != length:
                    f.truncate(length)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.samples)

    def done(self) -> np.ndarray:
        return np.fromfile(self.done_path, dtype=np.uint8).astype(bool)

    @property
    def complete(self) -> bool:
        return self.stem.with_suffix(".complete").exists()

    def ensure(self, positions, progress=None, first: float = 0.0, span: float = 1.0) -> None:
        """Decode the images at `positions` that are not in the file yet."""
        positions = np.unique(np.asarray(positions, dtype=np.int64).ravel())
        if len(positions) and (positions.min() < 0 or positions.max() >= len(self)):
            raise InvalidInputError(
                f"image positions must be in [0, {len(self)}); got {positions.min()}..{positions.max()}"
            )
        with self._lock:
            todo = positions[~self.done()[positions]] if len(positions) else positions
            per = math.prod(self.shape)
            with open(self.data_path, "r+b") as data, open(self.done_path, "r+b") as done:
                for k, pos in enumerate(todo.tolist()):
                    if progress is not None and k % REPORT_EVERY == 0:
                        progress(first + span * k / len(todo), f"decoding {self.root.name}: {k:,}/{len(todo):,} images")
                    path = self.samples[pos][0]
                    arr = _decode(path, self.root, self.mode, self.size)
                    if arr.shape[:2] != self.shape[1:]:
                        raise InvalidInputError(
                            f"{_rel(path, self.root)} is {arr.shape[1]}×{arr.shape[0]} pixels, unlike the others "
                            f"({self.shape[2]}×{self.shape[1]}); choose an image size to resize them to"
                        )
                    chw = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
                    os.pwrite(data.fileno(), np.ascontiguousarray(chw).tobytes(), pos * per)
                    os.pwrite(done.fileno(), b"\x01", pos)

    def fill(self, progress=None) -> None:
        """Decode every image not in the file yet (in pages, reporting progress), then mark it complete."""
        if self.complete:
            return
        n, page = len(self), 256
        for start in range(0, n, page):
            self.ensure(range(start, min(n, start + page)), progress, 0.1 + 0.9 * start / n, 0.9 * page / n)
        if self.done().all():
            self.stem.with_suffix(".complete").touch()

    def images(self) -> torch.Tensor:
        """(N, C, H, W) uint8, mapped from the file (copy-on-write: a write stays in this process)."""
        arr = np.memmap(self.data_path, dtype=np.uint8, mode="c", shape=(len(self), *self.shape))
        return torch.from_numpy(arr)


def _read_meta(path: Path, n: int) -> dict | None:
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    ok = isinstance(meta, dict) and meta.get("n") == n and meta.get("mode") in ("L", "RGB")
    return meta if ok and isinstance(meta.get("shape"), list) and len(meta["shape"]) == 3 else None


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def folder_cache(root: Path, size: int, cache_key: str | None = None) -> Path:
    """Where the decoded images of an image folder are kept (files named after this path with the
    suffixes .u8, .done, .json, .complete). The name stamps each class folder's name, modification
    time and number of entries (adding, removing or renaming an image changes them) without a stat of
    every file: checking the cache costs milliseconds."""
    try:
        dirs = sorted((d for d in os.scandir(root) if d.is_dir()), key=lambda d: d.name)
        parts = [str(Path(root).resolve())] + [
            f"{d.name}:{d.stat().st_mtime_ns}:{len(os.listdir(d.path))}" for d in dirs
        ]
    except OSError as exc:
        raise InvalidInputError(f"cannot read the folder {root} ({exc.strerror or type(exc).__name__})") from None
    stamp = hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]
    return _folders_dir() / f"{cache_key or 'folder'}-{size}-{stamp}.npz"


def _folders_dir() -> Path:
    """LENSCAPE_FOLDER_CACHE (set by whoever starts the server: a fast disk, or one cache for several
    workspaces, as the test suite shares one), else the workspace's cache/folders. A cache file is named
    after its folder's path and stamp, so workspaces sharing it read only what their folders hold."""
    shared = os.environ.get("LENSCAPE_FOLDER_CACHE", "").strip()
    if not shared:
        return cache_dir("folders")
    path = Path(shared).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


_CACHES: dict[tuple, FolderCache] = {}
_CACHES_LOCK = threading.Lock()


def open_folder(root: Path, size: int, cache_key: str | None = None, order=None, progress=None) -> FolderCache:
    """The folder's cache, listed once per process (again when the folder changed)."""
    key = (str(folder_cache(root, size, cache_key)), order is None)
    with _CACHES_LOCK:
        hit = _CACHES.get(key)
    if hit is None:
        hit = FolderCache(root, size, cache_key, order, progress)
        with _CACHES_LOCK:
            _CACHES[key] = hit
    return hit


def is_complete(root: Path, size: int, cache_key: str | None = None) -> bool:
    return folder_cache(root, size, cache_key).with_suffix(".complete").exists()


def folder_tensors(root: Path, size: int, cache_key: str | None = None, progress=None, order=None):
    """(images, labels, classes) of an image folder: every image decoded once into the memory-mapped
    cache (see FolderCache), the images mapped from it."""
    cache = open_folder(root, size, cache_key, order, progress)
    cache.fill(progress)
    return cache.images(), torch.from_numpy(cache.labels), cache.classes
