"""Figures of the Saliency page: attribution grids (image first, Captum's normalization), null-mass boxes, DiffROAR curves,
randomization strips."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import plotly.graph_objects as go

from lenscape.analysis.saliency import METHOD_LABELS
from lenscape.analysis.visualization import COLOURS, normalized, signed_map, threshold
from lenscape.ui.figures import MAIN_WIDTH, note, picture, pictures_figure, png_uri

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


def gray(image: np.ndarray) -> np.ndarray:
    """(C, H, W) in [0, 1] → (H, W) luminance for the background of an overlay."""
    return image[0] if image.shape[0] == 1 else (0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2])


def null_mass_boxes(
    values: np.ndarray, models: list[str], methods: list[str], null_share: float, k: float
) -> go.Figure:
    """values (models, methods, N) → grouped boxes of per-image NullMass@k, mean marked."""
    fig = go.Figure()
    for mi, name in enumerate(models):
        xs = [METHOD_LABELS.get(m, m) for m in methods for _ in range(values.shape[-1])]
        fig.add_trace(
            go.Box(
                x=xs,
                y=values[mi].ravel(),
                name=name,
                boxmean=True,
                marker_color=PALETTE[mi % len(PALETTE)],
                boxpoints=False,
            )
        )
    fig.add_hline(
        y=null_share,
        line_dash="dash",
        line_color="gray",
        annotation_text=f"uniform map ({null_share:.0%})",
        annotation_position="top left",
    )
    fig.update_layout(
        boxmode="group",
        yaxis=dict(title=f"NullMass@{k:.0%} (share of top-k mass in the null block)", range=[0, 1]),
        height=420,
        margin=dict(l=0, r=0, t=30, b=0),
        legend=dict(orientation="h", y=-0.15),
    )
    return fig


def diffroar_curves(k: np.ndarray, methods: list[str], mean: np.ndarray, std: np.ndarray) -> go.Figure:
    fig = go.Figure()
    for i, m in enumerate(methods):
        color = PALETTE[i % len(PALETTE)]
        fig.add_trace(
            go.Scatter(
                x=np.r_[k, k[::-1]],
                y=np.r_[mean[i] + std[i], (mean[i] - std[i])[::-1]],
                fill="toself",
                fillcolor=color,
                opacity=0.15,
                line=dict(width=0),
                hoverinfo="skip",
                showlegend=False,
            )
        )
        fig.add_trace(
            go.Scatter(
                x=k,
                y=mean[i],
                name=METHOD_LABELS.get(m, m),
                mode="lines+markers",
                line=dict(color=color, dash="dot" if m == "random" else "solid"),
                error_y=dict(type="data", array=std[i], visible=True, thickness=1),
            )
        )
    fig.add_hline(y=0, line_color="gray")
    fig.update_layout(
        xaxis=dict(title="k: fraction of coordinates kept", tickformat=".0%"),
        yaxis=dict(title="DiffROAR(k) = acc(top-k) − acc(bottom-k)"),
        height=420,
        margin=dict(l=0, r=0, t=30, b=0),
        legend=dict(orientation="h", y=-0.2),
    )
    return fig


def rank_corr_curves(results) -> go.Figure:
    """Mean ρ with the original map per step, with each method's two measured baselines as dotted
    (different images) and dashed (two random networks) lines in its colour."""
    fig = go.Figure()
    order = results[0].order
    for i, res in enumerate(results):
        color, label = PALETTE[i % len(PALETTE)], METHOD_LABELS.get(res.method, res.method)
        xs = ["original", *[("+ " if order == "cascading" else "only ") + name for name in res.layers]]
        ys = [1.0, *[None if np.isnan(m) else m for m in res.layer_means]]
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines+markers", name=label, line=dict(color=color)))
        for value, dash, what in (
            (res.floor, "dot", "different images, trained model"),
            (res.random_level, "dash", "two random networks"),
        ):
            fig.add_trace(
                go.Scatter(
                    x=[xs[0], xs[-1]],
                    y=[value, value],
                    mode="lines",
                    showlegend=False,
                    line=dict(color=color, dash=dash, width=1),
                    hovertemplate=f"{label}: {what} %{{y:.3f}}<extra></extra>",
                )
            )
    title = (
        "layers re-initialized (cumulative, from the top)"
        if order == "cascading"
        else "layer re-initialized (one at a time, the rest trained)"
    )
    fig.update_layout(
        xaxis=dict(title=title),
        yaxis=dict(title="rank correlation with the original map", range=[-0.3, 1.05]),
        height=380,
        margin=dict(l=0, r=0, t=30, b=0),
        legend=dict(orientation="h", y=-0.3),
    )
    return fig


# ---------------------------------------------------------------------------------------------
# The Maps tab's grid: the image first, then each model's maps, normalized as Captum does

ARCH_NAMES = {"mlp": "MLP", "cnn": "small CNN", "lenet": "LeNet", "resnet18": "ResNet-18", "resnet9": "ResNet-9"}


def model_facts(record: dict, epoch: int) -> dict[str, str | None]:
    """What makes a model what it is, each fact as shown ("seed 0"); None where it does not apply
    (an imported model has no recipe)."""
    arch, cfg = record.get("arch") or {}, record.get("config") or {}
    name = arch.get("name", "?")
    shown = f"torchvision {arch.get('torchvision_name')}" if name == "torchvision" else ARCH_NAMES.get(name, name)
    if name == "mlp":
        shown += " " + "-".join(map(str, arch.get("widths", ())))
    if name == "cnn" and arch.get("batchnorm"):
        shown += " with BatchNorm"
    data = record.get("data")
    facts = {"data": _data_label(data), "arch": shown, "made": "trained here" if cfg else "imported"}
    if arch.get("p_gen"):
        facts["dropout"] = f"tied dropout {arch['p_gen']:g}/{arch.get('p_mem', 0):g}"
    pgd = cfg.get("adversarial")
    facts.update(
        {
            "epochs": f"{cfg['epochs']} epochs" if cfg else None,
            "checkpoint": f"at epoch {epoch}" if cfg and epoch != cfg.get("epochs") else None,
            "seed": f"seed {cfg['seed']}" if cfg else None,
            "noise": f"{cfg['label_noise']:.0%} label noise" if cfg.get("label_noise") else None,
            "pgd": f"PGD-{pgd['norm']} ε {pgd['eps']:g}" if pgd else ("standard training" if cfg else None),
            "lr": f"lr {cfg['lr']:g}" if cfg else None,
            "batch": f"batch {cfg['batch_size']}" if cfg else None,
            "schedule": f"{cfg['schedule']} schedule" if cfg else None,
            "subset": f"{cfg['train_subset']:,} training images" if cfg.get("train_subset") else None,
            "norm": "input mean " + ", ".join(f"{v:.3g}" for v in arch.get("mean", ())),
        }
    )
    return facts


def _data_label(data: dict | None) -> str:
    from lenscape.models.data import DataSpec

    return DataSpec.from_dict(data).label if data else "no data set"


QUIET = {"norm", "lr", "batch", "schedule"}  # named where they differ, not among the shared facts
SOME_ONLY = {"epochs", "seed", "checkpoint", "noise", "dropout", "subset"}  # named even where others have none


def what_differs(facts: list[dict[str, str | None]]) -> tuple[list[str], list[list[str]]]:
    """(the facts every model shares, each model's facts that differ between them): a legend that
    names only real differences. A fact is one where two models have different values, or, for the
    facts of a recipe (SOME_ONLY), where one model has it and another has none (imported)."""
    keys = list(dict.fromkeys(k for f in facts for k in f))
    values = {k: [f.get(k) for f in facts] for k in keys}
    differ = [
        k
        for k, vs in values.items()
        if len({v for v in vs if v is not None}) > 1 or (k in SOME_ONLY and None in vs and any(vs))
    ]
    common = [vs[0] for k, vs in values.items() if k not in QUIET and vs[0] is not None and len(set(vs)) == 1]
    return common, [[f[k] for k in differ if f.get(k) is not None] for f in facts]


@dataclass(frozen=True)
class Display:
    sign: str = "absolute_value"  # analysis.visualization.SIGNS
    mode: str = "blended"  # "blended" over the image in grey, or "heat map" alone (beside the image)
    alpha: float = 0.5  # the heat map's opacity when blended (Captum's alpha_overlay)
    outlier_perc: float = 2.0  # Captum's default
    shared: bool = False  # one colour range for every map shown, else one per map

    def describe(self) -> str:
        return (
            f"{self.sign.replace('_', ' ')} · {self.mode}"
            + (f" α {self.alpha:g}" if self.mode == "blended" else "")
            + f" · top {self.outlier_perc:g}% clipped · {'shared' if self.shared else 'per-map'} colour range"
        )


def _rgb(image: np.ndarray) -> np.ndarray:
    """(C, H, W) in [0, 1] → (H, W, 3) uint8."""
    img = np.repeat(image, 3, 0) if image.shape[0] == 1 else image
    return (np.clip(img.transpose(1, 2, 0), 0, 1) * 255).round().astype(np.uint8)


def display_values(cells: list[list[np.ndarray]], d: Display) -> tuple[list[list[np.ndarray]], list[list[float]]]:
    """Each cell's (H, W) map in Captum's display range and the |attribution| its range ends at."""
    signed = [[signed_map(a, d.sign) for a in row] for row in cells]
    shared = threshold([m for row in signed for m in row], d.outlier_perc) if d.shared else None
    limits = [[shared if d.shared else threshold([m], d.outlier_perc) for m in row] for row in signed]
    return ([[normalized(m, lim, d.sign) for m, lim in zip(row, lrow)] for row, lrow in zip(signed, limits)], limits)


# The grid's geometry, in pixels: it is drawn at a fixed width so that maps keep their size and
# colour bars their maps' height (a grid stretched to the page's width shrank maps to ~50 px with 9
# methods, bars taller than the maps). Maps wrap onto more rows rather than shrink below MIN_MAP.
WIDTH = MAIN_WIDTH
GAP = 14  # between cells
BAR = 50  # what a map's own colour bar takes beside it: gap, strip and labels
STRIP = 7  # the colour strip's width
MIN_MAP = 100  # maps stay at least this wide
TITLE_LINE, HEAD_LINE = 15, 18  # per line of a map's title (12-px type) and of an image's header (13-px)


def grid_shape(n_maps: int, per_map: bool, largest: float) -> tuple[int, float]:
    """(maps per row, map width): the most maps per row (after the image) that stay MIN_MAP wide."""
    bar, right = (BAR, 0) if per_map else (0, BAR)
    for k in range(max(n_maps, 1), 0, -1):
        width = (WIDTH - right - k * (GAP + bar)) / (k + 1)
        if width >= MIN_MAP or k == 1:
            return k, min(width, largest)
    raise AssertionError("unreachable")


def _wrap(text: str, chars: int) -> list[str]:
    """`text` on lines of about `chars` characters, broken at spaces."""
    lines: list[str] = []
    for word in text.split(" "):
        if lines and len(lines[-1]) + 1 + len(word) <= chars:
            lines[-1] += " " + word
        else:
            lines.append(word)
    return lines


@lru_cache(maxsize=8)
def _palette(sign: str) -> np.ndarray:
    """(256, 3) uint8: the sign's Plotly colour scale (as the heat maps drew it), low to high."""
    from matplotlib.colors import to_rgb
    from plotly.colors import sample_colorscale, unlabel_rgb

    scale = COLOURS[sign]
    if not isinstance(scale, str):  # CSS colour names, as the browser reads them
        scale = [[at, "rgb({}, {}, {})".format(*(round(255 * v) for v in to_rgb(name)))] for at, name in scale]
    return (
        np.array([unlabel_rgb(c) for c in sample_colorscale(scale, list(np.linspace(0, 1, 256)))])
        .round()
        .astype(np.uint8)
    )


def map_rgb(value: np.ndarray, image: np.ndarray, d: Display) -> np.ndarray:
    """(H, W) map in its display range → (H, W, 3) uint8: the colour scale, blended at `d.alpha`
    over the image in grey (over white where the map's size differs from the image's)."""
    lo = -1.0 if d.sign == "all" else 0.0
    idx = np.clip(np.round((value - lo) / (1.0 - lo) * 255), 0, 255).astype(np.int64)
    rgb = _palette(d.sign)[idx].astype(np.float64)
    if d.mode == "blended":
        base = gray(image) * 255 if value.shape == image.shape[1:] else np.full(value.shape, 255.0)
        rgb = d.alpha * rgb + (1 - d.alpha) * base[..., None]
    return rgb.round().astype(np.uint8)


def attribution_grid(
    images: np.ndarray,
    cells: list[list[np.ndarray]],
    image_titles: list[str],
    col_titles: list[str],
    d: Display,
    cell: int = 190,
    outlines: list[tuple[int, int] | None] | None = None,
    group: int | None = None,
) -> go.Figure:
    """Each image (its title above, as a header) and then its maps: cells[r][c] is a (C, H, W)
    attribution (Grad-CAM's (1, H, W)) under col_titles[c], as many per row as stay MIN_MAP px wide
    (at most `cell`), the rest on the next rows; every `group` maps (a model's, in a comparison)
    start a row, so that one method's maps of several models line up. Each map has its colour bar
    (or, with d.shared, one for all), labelled in attribution units. `outlines[r]` = (row0, row1)
    boxes pixel rows row0..row1 of row r's image and maps (BlockMNIST's signal block). The maps are
    pictures: the figure is quick to build and to draw, whatever the number of methods."""
    values, limits = display_values(cells, d)
    h, w = images.shape[-2:]
    per_map = not d.shared
    group = group or len(col_titles)
    k, size = grid_shape(min(group, len(col_titles)), per_map, cell)
    tall = size * h / w
    pitch = size + GAP + (BAR if per_map else 0)
    titles = [_wrap(t, max(8, int((pitch - 6) / 7))) for t in col_titles]
    title_px = TITLE_LINE * max(len(t) for t in titles) + 4 if titles else 0
    scale = max(1, int(np.ceil(size / w)))
    strip = png_uri(_palette(d.sign)[::-1][:, None, :], 1)
    pictures, notes, boxes = [], [], []
    y, first_map = 0.0, None
    for r in range(len(cells)):
        head = image_titles[r].split("<br>")
        notes.append(note("<br>".join(head), 0, y, size=13, xanchor="left"))
        y += HEAD_LINE * len(head) + 4
        for start, stop in _rows(len(col_titles), group, k):
            top = y + title_px
            first_map = top if first_map is None else first_map
            spots = [(0.0, images[r], None)] if start == 0 else []
            spots += [(size + GAP + (c - start) * pitch, values[r][c], c) for c in range(start, stop)]
            for x, v, c in spots:
                rgb = _rgb(v) if c is None else map_rgb(v, images[r], d)
                pictures.append(picture(png_uri(rgb, scale), x, top, size, tall))
                if c is not None:
                    notes.append(note("<br>".join(titles[c]), x + size / 2, top - 2, yanchor="bottom"))
                if c is not None and per_map:
                    pictures.append(picture(strip, x + size + 4, top, STRIP, tall))
                    notes += _bar_labels(limits[r][c], d.sign, x + size + 4 + STRIP, top, tall)
                if outlines and outlines[r] is not None:
                    boxes.append((x, top + tall * outlines[r][0] / h, x + size, top + tall * outlines[r][1] / h))
            y = top + tall + GAP
    if not per_map and first_map is not None:  # one bar for all, beside the first row
        pictures.append(picture(strip, WIDTH - BAR + 4, first_map, STRIP, tall))
        notes += _bar_labels(limits[0][0], d.sign, WIDTH - BAR + 4 + STRIP, first_map, tall)
    return _figure(pictures, notes, boxes, y)


def _rows(n: int, group: int, k: int) -> list[tuple[int, int]]:
    """(first, last + 1) map of each row: `k` a row, every `group` maps starting a row."""
    return [
        (start, min(start + k, g0 + group, n))
        for g0 in range(0, n, group)
        for start in range(g0, min(g0 + group, n), k)
    ]


def _bar_labels(limit: float, sign: str, x: float, top: float, tall: float) -> list[dict]:
    """A colour strip's labels in attribution units: its ends, and 0 in the middle for signed maps."""
    ticks = (
        [(f"{limit:.2g}", 0.0), ("0", 1.0)]
        if sign != "all"
        else [(f"{limit:.2g}", 0.0), ("0", 0.5), (f"{-limit:.2g}", 1.0)]
    )
    return [note(text, x + 2, top + at * tall, size=10, xanchor="left", yanchor="middle") for text, at in ticks]


def _figure(pictures: list[dict], notes: list[dict], boxes: list[tuple], height: float) -> go.Figure:
    """The grid from pixel positions measured from the top (y is turned into the paper's, from the bottom)."""
    height = max(height, 60.0)
    flip = lambda top: 1 - top / height  # noqa: E731
    shapes = [
        dict(
            type="rect",
            xref="paper",
            yref="paper",
            x0=x0 / WIDTH,
            x1=x1 / WIDTH,
            y0=flip(y1),
            y1=flip(y0),
            line=dict(color="#00e676", width=2),
        )
        for x0, y0, x1, y1 in boxes
    ]
    return pictures_figure(WIDTH, height, pictures, notes, shapes)


def grid_file(
    images: np.ndarray,
    cells: list[list[np.ndarray]],
    image_titles: list[str],
    col_titles: list[str],
    d: Display,
    about: dict[str, str],
    fmt: str,
) -> bytes:
    """The same grid drawn with matplotlib as a PNG or PDF, Captum's colour maps, with `about` (model,
    method, parameters) written under the title and into the file's metadata."""
    import io
    import json

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.colors import LinearSegmentedColormap
    from matplotlib.figure import Figure

    values, limits = display_values(cells, d)
    rows, cols = len(cells), len(col_titles) + 1
    cmap = (
        LinearSegmentedColormap.from_list("RdWhGn", ["red", "white", "green"]) if d.sign == "all" else COLOURS[d.sign]
    )
    lo = -1 if d.sign == "all" else 0
    fig = Figure(figsize=(2.1 * cols, 2.3 * rows + 0.9))
    axes = fig.subplots(rows, cols, squeeze=False)
    for r in range(rows):
        axes[r][0].imshow(_rgb(images[r]), interpolation="nearest")
        axes[r][0].set_title(image_titles[r], fontsize=8)
        for c in range(cols - 1):
            ax = axes[r][c + 1]
            if d.mode == "blended" and values[r][c].shape == images[r].shape[1:]:
                ax.imshow(gray(images[r]), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            im = ax.imshow(
                values[r][c],
                cmap=cmap,
                vmin=lo,
                vmax=1,
                interpolation="nearest",
                alpha=d.alpha if d.mode == "blended" else 1.0,
            )
            bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02, ticks=[lo, 1])
            bar.ax.set_yticklabels([f"{lo * limits[r][c]:.2g}", f"{limits[r][c]:.2g}"], fontsize=6)
            if r == 0:
                ax.set_title(col_titles[c], fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([]), ax.set_yticks([])
    text = " · ".join(f"{k}: {v}" for k, v in about.items())
    fig.suptitle("Lenscape saliency maps\n" + text, fontsize=7, wrap=True)
    fig.tight_layout()
    buf = io.BytesIO()
    meta = (
        {"Title": "Lenscape saliency maps", "Subject": text, "Keywords": json.dumps(about)}
        if fmt == "pdf"
        else {"Title": "Lenscape saliency maps", "Description": json.dumps(about)}
    )
    fig.savefig(buf, format=fmt, dpi=150, metadata=meta)
    return buf.getvalue()
