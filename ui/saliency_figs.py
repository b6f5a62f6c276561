"""Figures of the Saliency page: attribution grids (image first, Captum's normalization), null-mass boxes, DiffROAR curves,
randomization strips."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analysis.saliency import METHOD_LABELS
from analysis.visualization import COLOURS, normalized, signed_map, threshold

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


def gray(image: np.ndarray) -> np.ndarray:
    """(C, H, W) in [0, 1] → (H, W) luminance for the background of an overlay."""
    return image[0] if image.shape[0] == 1 else (0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2])


def null_mass_boxes(values: np.ndarray, models: list[str], methods: list[str], null_share: float,
                    k: float) -> go.Figure:
    """values (models, methods, N) → grouped boxes of per-image NullMass@k, mean marked."""
    fig = go.Figure()
    for mi, name in enumerate(models):
        xs = [METHOD_LABELS.get(m, m) for m in methods for _ in range(values.shape[-1])]
        fig.add_trace(go.Box(x=xs, y=values[mi].ravel(), name=name, boxmean=True,
                             marker_color=PALETTE[mi % len(PALETTE)], boxpoints=False))
    fig.add_hline(y=null_share, line_dash="dash", line_color="gray",
                  annotation_text=f"uniform map ({null_share:.0%})", annotation_position="top left")
    fig.update_layout(boxmode="group", yaxis=dict(title=f"NullMass@{k:.0%} (share of top-k mass in the null block)",
                                                  range=[0, 1]), height=420, margin=dict(l=0, r=0, t=30, b=0),
                      legend=dict(orientation="h", y=-0.15))
    return fig


def diffroar_curves(k: np.ndarray, methods: list[str], mean: np.ndarray, std: np.ndarray) -> go.Figure:
    fig = go.Figure()
    for i, m in enumerate(methods):
        color = PALETTE[i % len(PALETTE)]
        fig.add_trace(go.Scatter(x=np.r_[k, k[::-1]], y=np.r_[mean[i] + std[i], (mean[i] - std[i])[::-1]],
                                 fill="toself", fillcolor=color, opacity=0.15, line=dict(width=0),
                                 hoverinfo="skip", showlegend=False))
        fig.add_trace(go.Scatter(x=k, y=mean[i], name=METHOD_LABELS.get(m, m), mode="lines+markers",
                                 line=dict(color=color, dash="dot" if m == "random" else "solid"),
                                 error_y=dict(type="data", array=std[i], visible=True, thickness=1)))
    fig.add_hline(y=0, line_color="gray")
    fig.update_layout(xaxis=dict(title="k: fraction of coordinates kept", tickformat=".0%"),
                      yaxis=dict(title="DiffROAR(k) = acc(top-k) − acc(bottom-k)"),
                      height=420, margin=dict(l=0, r=0, t=30, b=0), legend=dict(orientation="h", y=-0.2))
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
        for value, dash, what in ((res.floor, "dot", "different images, trained model"),
                                  (res.random_level, "dash", "two random networks")):
            fig.add_trace(go.Scatter(x=[xs[0], xs[-1]], y=[value, value], mode="lines", showlegend=False,
                                     line=dict(color=color, dash=dash, width=1),
                                     hovertemplate=f"{label}: {what} %{{y:.3f}}<extra></extra>"))
    title = ("layers re-initialized (cumulative, from the top)" if order == "cascading"
             else "layer re-initialized (one at a time, the rest trained)")
    fig.update_layout(xaxis=dict(title=title), yaxis=dict(title="rank correlation with the original map",
                                                          range=[-0.3, 1.05]),
                      height=380, margin=dict(l=0, r=0, t=30, b=0), legend=dict(orientation="h", y=-0.3))
    return fig


# ---------------------------------------------------------------------------------------------
# The Maps tab's grid: the image first, then each model's maps, normalized as Captum does

ARCH_NAMES = {"mlp": "MLP", "cnn": "small CNN", "lenet": "LeNet", "resnet18": "ResNet-18", "resnet9": "ResNet-9"}


def model_facts(record: dict, epoch: int) -> dict[str, str | None]:
    """What makes a model what it is, each fact as shown ("seed 0"); None where it does not apply
    (an imported model has no recipe)."""
    arch, cfg = record.get("arch") or {}, record.get("config") or {}
    name = arch.get("name", "?")
    shown = (f"torchvision {arch.get('torchvision_name')}" if name == "torchvision" else ARCH_NAMES.get(name, name))
    if name == "mlp":
        shown += " " + "-".join(map(str, arch.get("widths", ())))
    if name == "cnn" and arch.get("batchnorm"):
        shown += " with BatchNorm"
    data = record.get("data")
    facts = {"data": _data_label(data), "arch": shown, "made": "trained here" if cfg else "imported"}
    if arch.get("p_gen"):
        facts["dropout"] = f"tied dropout {arch['p_gen']:g}/{arch.get('p_mem', 0):g}"
    pgd = cfg.get("adversarial")
    facts.update({"epochs": f"{cfg['epochs']} epochs" if cfg else None,
                  "checkpoint": f"at epoch {epoch}" if cfg and epoch != cfg.get("epochs") else None,
                  "seed": f"seed {cfg['seed']}" if cfg else None,
                  "noise": f"{cfg['label_noise']:.0%} label noise" if cfg.get("label_noise") else None,
                  "pgd": f"PGD-{pgd['norm']} ε {pgd['eps']:g}" if pgd else ("standard training" if cfg else None),
                  "lr": f"lr {cfg['lr']:g}" if cfg else None, "batch": f"batch {cfg['batch_size']}" if cfg else None,
                  "schedule": f"{cfg['schedule']} schedule" if cfg else None,
                  "subset": f"{cfg['train_subset']:,} training images" if cfg.get("train_subset") else None,
                  "norm": "input mean " + ", ".join(f"{v:.3g}" for v in arch.get("mean", ()))})
    return facts


def _data_label(data: dict | None) -> str:
    from models.data import DataSpec

    return DataSpec.from_dict(data).label if data else "no data set"


QUIET = {"norm", "lr", "batch", "schedule"}           # named where they differ, not among the shared facts
SOME_ONLY = {"epochs", "seed", "checkpoint", "noise", "dropout", "subset"}   # named even where others have none


def what_differs(facts: list[dict[str, str | None]]) -> tuple[list[str], list[list[str]]]:
    """(the facts every model shares, each model's facts that differ between them): a legend that
    names only real differences. A fact is one where two models have different values, or, for the
    facts of a recipe (SOME_ONLY), where one model has it and another has none (imported)."""
    keys = list(dict.fromkeys(k for f in facts for k in f))
    values = {k: [f.get(k) for f in facts] for k in keys}
    differ = [k for k, vs in values.items()
              if len({v for v in vs if v is not None}) > 1 or (k in SOME_ONLY and None in vs and any(vs))]
    common = [vs[0] for k, vs in values.items() if k not in QUIET and vs[0] is not None and len(set(vs)) == 1]
    return common, [[f[k] for k in differ if f.get(k) is not None] for f in facts]


@dataclass(frozen=True)
class Display:
    sign: str = "absolute_value"     # analysis.visualization.SIGNS
    mode: str = "blended"            # "blended" over the image in grey, or "heat map" alone (beside the image)
    alpha: float = 0.5               # the heat map's opacity when blended (Captum's alpha_overlay)
    outlier_perc: float = 2.0        # Captum's default
    shared: bool = False             # one colour range for every map shown, else one per map

    def describe(self) -> str:
        return (f"{self.sign.replace('_', ' ')} · {self.mode}" + (f" α {self.alpha:g}" if self.mode == "blended" else "")
                + f" · top {self.outlier_perc:g}% clipped · {'shared' if self.shared else 'per-map'} colour range")


def _rgb(image: np.ndarray) -> np.ndarray:
    """(C, H, W) in [0, 1] → (H, W, 3) uint8."""
    img = np.repeat(image, 3, 0) if image.shape[0] == 1 else image
    return (np.clip(img.transpose(1, 2, 0), 0, 1) * 255).round().astype(np.uint8)


def display_values(cells: list[list[np.ndarray]], d: Display) -> tuple[list[list[np.ndarray]], list[list[float]]]:
    """Each cell's (H, W) map in Captum's display range and the |attribution| its range ends at."""
    signed = [[signed_map(a, d.sign) for a in row] for row in cells]
    shared = threshold([m for row in signed for m in row], d.outlier_perc) if d.shared else None
    limits = [[shared if d.shared else threshold([m], d.outlier_perc) for m in row] for row in signed]
    return ([[normalized(m, lim, d.sign) for m, lim in zip(row, lrow)] for row, lrow in zip(signed, limits)],
            limits)


def attribution_grid(images: np.ndarray, cells: list[list[np.ndarray]], image_titles: list[str],
                     col_titles: list[str], d: Display, cell: int = 190,
                     outlines: list[tuple[int, int] | None] | None = None) -> go.Figure:
    """Rows are images: the image itself, then one map per column (cells[r][c] is a (C, H, W)
    attribution, Grad-CAM's (1, H, W)). Colour bars are labelled in attribution units.
    `outlines[r]` = (row0, row1) draws a green box around pixel rows row0..row1 of row r's image
    and maps (BlockMNIST's signal block)."""
    values, limits = display_values(cells, d)
    rows, cols = len(cells), len(col_titles) + 1
    titles = [t for r in range(rows) for t in [image_titles[r], *(col_titles if r == 0 else [""] * (cols - 1))]]
    per_map = not d.shared
    h, w = images.shape[-2:]
    lines = max(t.count("<br>") + 1 for t in image_titles)      # title lines above each row (13 px type)
    row_px, gap_px = cell * h / w, 18 * lines + 8
    height = int(rows * (row_px + gap_px) + 40)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, horizontal_spacing=0.05 if per_map else 0.012,
                        vertical_spacing=gap_px / height if rows > 1 else 0)
    scale = COLOURS[d.sign]
    lo = -1 if d.sign == "all" else 0
    for r in range(rows):
        fig.add_trace(go.Image(z=_rgb(images[r]), hoverinfo="skip"), r + 1, 1)
        base = gray(images[r])
        for c in range(cols - 1):
            v, lim = values[r][c], limits[r][c]
            if d.mode == "blended" and v.shape == base.shape:
                fig.add_trace(go.Heatmap(z=base, colorscale="gray", showscale=False, hoverinfo="skip", zmin=0, zmax=1),
                              r + 1, c + 2)
            sub = fig.get_subplot(r + 1, c + 2)
            bar = dict(thickness=8, len=(sub.yaxis.domain[1] - sub.yaxis.domain[0]) * 0.9, y=sum(sub.yaxis.domain) / 2,
                       x=sub.xaxis.domain[1] + 0.003, xanchor="left", yanchor="middle", tickfont=dict(size=9),
                       tickvals=[lo, 0, 1] if lo else [0, 1],
                       ticktext=[f"{-lim:.2g}", "0", f"{lim:.2g}"] if lo else ["0", f"{lim:.2g}"])
            fig.add_trace(go.Heatmap(
                z=v, colorscale=scale, zmin=lo, zmax=1, opacity=d.alpha if d.mode == "blended" else 1.0,
                showscale=per_map or (r == 0 and c == cols - 2),
                colorbar=bar if per_map else dict(thickness=12, len=0.6, tickvals=bar["tickvals"], ticktext=bar["ticktext"],
                                                  title=dict(text="attribution", side="right")),
                hovertemplate="%{z:.2f} of the range<extra></extra>"), r + 1, c + 2)
        if outlines and outlines[r] is not None:
            y0, y1 = outlines[r]
            for c in range(cols):
                fig.add_shape(type="rect", x0=-0.5, x1=base.shape[1] - 0.5, y0=y0 - 0.5, y1=y1 - 0.5,
                              line=dict(color="#00e676", width=2), row=r + 1, col=c + 1)
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False)
    fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False, autorange="reversed")
    for i in range(1, rows * cols + 1):
        fig.layout[f"yaxis{'' if i == 1 else i}"].scaleanchor = f"x{'' if i == 1 else i}"
    fig.update_layout(height=max(260, height), margin=dict(l=0, r=40, t=gap_px, b=0),
                      plot_bgcolor="white")
    fig.for_each_annotation(lambda a: a.update(font_size=13))
    return fig


def grid_file(images: np.ndarray, cells: list[list[np.ndarray]], image_titles: list[str], col_titles: list[str],
              d: Display, about: dict[str, str], fmt: str) -> bytes:
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
    cmap = (LinearSegmentedColormap.from_list("RdWhGn", ["red", "white", "green"]) if d.sign == "all"
            else COLOURS[d.sign])
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
            im = ax.imshow(values[r][c], cmap=cmap, vmin=lo, vmax=1, interpolation="nearest",
                           alpha=d.alpha if d.mode == "blended" else 1.0)
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
    meta = ({"Title": "Lenscape saliency maps", "Subject": text, "Keywords": json.dumps(about)} if fmt == "pdf"
            else {"Title": "Lenscape saliency maps", "Description": json.dumps(about)})
    fig.savefig(buf, format=fmt, dpi=150, metadata=meta)
    return buf.getvalue()
