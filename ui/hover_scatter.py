"""Scatter plots that show the hovered example's image (a Streamlit custom component).

Plotly's hover labels hold text only, so the projection view draws its scatter plots in a small
component of our own (`assets/hover_scatter/index.html`): Plotly.js draws the points, and one
sprite sheet per panel (a PNG or JPEG of all kept thumbnails) supplies the image under the plot.
Plotly.js is copied from the installed plotly package into the component's folder, so the
browser needs no network. Each panel's points and sprite are written there too, under names made
of their hash, and the page fetches them by name: a rerun sends a few file names, not megabytes,
and the page redraws (losing its zoom) only when a panel changed.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import plotly
import plotly.graph_objects as go
import streamlit as st
import streamlit.components.v1 as components
from PIL import Image

from lenscape.models.paths import cache_dir

SOURCE = Path(__file__).resolve().parents[1] / "assets" / "hover_scatter" / "index.html"
MAX_VALUES = 16_000_000  # pixel values kept per panel: ~20,000 MNIST or ~5,000 CIFAR-10 thumbnails (a 3 MB file)


def images_to_keep(image_shape: tuple[int, ...]) -> int:
    """How many thumbnails of (C, H, W) images a panel keeps; beyond them hovering shows the caption only."""
    return max(1, MAX_VALUES // int(np.prod(image_shape)))


@dataclass(frozen=True)
class Sprite:
    data: bytes  # the encoded sheet
    suffix: str  # ".png" or ".jpg"
    columns: int
    tile: tuple[int, int]  # (width, height) of one thumbnail in pixels
    indices: list[int]  # example index of each tile, in sheet order


def sprite_sheet(images: np.ndarray, indices: np.ndarray) -> Sprite:
    """Tile uint8 images (N, C, H, W), C = 1 or 3, into one sheet, as square as it goes: PNG for
    grey images (small and exact), JPEG at quality 90 for colour (PNG would be ~5x larger)."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1] not in (1, 3) or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images (N, 1 or 3, H, W); got {images.dtype} {images.shape}")
    n, c, h, w = images.shape
    if n == 0:
        raise ValueError("no images to tile")
    columns = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / columns))
    sheet = np.zeros((rows * h, columns * w, c), dtype=np.uint8)
    for k in range(n):
        r, q = divmod(k, columns)
        sheet[r * h : (r + 1) * h, q * w : (q + 1) * w] = images[k].transpose(1, 2, 0)
    buf = io.BytesIO()
    if c == 1:
        Image.fromarray(sheet[..., 0], mode="L").save(buf, format="PNG", compress_level=6)
        suffix = ".png"
    else:
        Image.fromarray(sheet, mode="RGB").save(buf, format="JPEG", quality=90)
        suffix = ".jpg"
    return Sprite(data=buf.getvalue(), suffix=suffix, columns=columns, tile=(w, h), indices=[int(i) for i in indices])


@dataclass(frozen=True)
class Panel:
    figure: go.Figure  # the scatter; customdata[0] of every trace must be the example index
    title: str  # shown above the plot (plain text: the page writes it as text)
    index: np.ndarray  # (N,) example index of each point
    xy: np.ndarray  # (N, 2) its coordinates
    captions: list[str]  # one line of text per point (plain text, likewise)
    sprite: Sprite
    dataset: str  # panels with the same data set link their hovers


def _component_dir() -> Path:
    """The component's folder: our index.html plus plotly.min.js from the installed plotly
    (Streamlit serves only files inside the folder, so a symlink would not do)."""
    folder = cache_dir("components", "hover_scatter")
    js = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    for src in (SOURCE, js):
        dst = folder / src.name
        if not dst.exists() or dst.stat().st_size != src.stat().st_size or dst.read_bytes() != src.read_bytes():
            shutil.copyfile(src, dst)
    return folder


KEEP_FILES = 200  # panel files kept in the component folder (oldest removed first)


def _publish(folder: Path, data: bytes, suffix: str) -> str:
    """Write `data` under its hash in folder/files (once) and return the name the page fetches."""
    name = f"files/{hashlib.sha256(data).hexdigest()[:24]}{suffix}"
    path = folder / name
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    else:
        path.touch()  # recently used: pruned last
    return name


def _prune(folder: Path, keep: int = KEEP_FILES) -> None:
    files = sorted((folder / "files").glob("*"), key=lambda f: f.stat().st_mtime, reverse=True)
    for old in files[keep:]:
        old.unlink(missing_ok=True)


@st.cache_resource(show_spinner=False)
def _declare(folder: str):
    return components.declare_component("lenscape_hover_scatter", path=folder)


def hover_scatter(
    panels: list[Panel], key: str, height: int = 480, hint: str = "Hover a point to see its image."
) -> None:
    folder = _component_dir()
    names = []
    for p in panels:
        spec = {
            "figure": json.loads(p.figure.to_json()),
            "points": {
                "index": [int(i) for i in p.index],
                "x": p.xy[:, 0].round(5).tolist(),
                "y": p.xy[:, 1].round(5).tolist(),
                "caption": list(p.captions),
            },
            "sprite": {
                "url": _publish(folder, p.sprite.data, p.sprite.suffix),
                "columns": p.sprite.columns,
                "tile": list(p.sprite.tile),
                "indices": p.sprite.indices,
            },
            "dataset": p.dataset,
            "hint": hint,
            "title": p.title,
        }
        names.append(_publish(folder, json.dumps(spec).encode(), ".json"))
    _prune(folder)
    # The names are content hashes, so the page redraws (and loses its zoom) only when a panel changed.
    _declare(str(folder))(panels=names, height=height, key=key, default=None)
