"""Figures of the Saliency page: map grids over images, null-mass boxes, DiffROAR curves,
randomization strips."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analysis.saliency import METHOD_LABELS

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


def gray(image: np.ndarray) -> np.ndarray:
    """(C, H, W) in [0, 1] → (H, W) luminance for the background of an overlay."""
    return image[0] if image.shape[0] == 1 else (0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2])


def reduce_map(attr: np.ndarray, signed: bool) -> np.ndarray:
    """(C, H, W) → (H, W): channels summed, signed or absolute."""
    return attr.sum(0) if signed else np.abs(attr).sum(0)


def map_grid(images: np.ndarray, maps: list[list[np.ndarray]], row_titles: list[str], col_titles: list[str],
             signed: bool, opacity: float, shared: bool, outlines: list[tuple[int, int] | None] | None = None,
             cell: int = 150) -> go.Figure:
    """Rows are images, columns are methods. maps[r][c] is (H, W); images[r] is (C, H, W).
    `outlines[r]` = (row0, row1) draws a box around rows row0..row1 (the signal block)."""
    rows, cols = len(maps), len(col_titles)
    fig = make_subplots(rows=rows, cols=cols, column_titles=col_titles, row_titles=row_titles,
                        horizontal_spacing=0.01, vertical_spacing=0.02 if rows > 1 else 0)
    scale = "RdBu_r" if signed else "Inferno"
    if shared:
        top = max(float(np.abs(m).max()) for row in maps for m in row) or 1.0
    for r in range(rows):
        base = gray(images[r])
        for c in range(cols):
            m = maps[r][c]
            lim = top if shared else (float(np.abs(m).max()) or 1.0)
            fig.add_trace(go.Heatmap(z=base, colorscale="gray", showscale=False, hoverinfo="skip", zmin=0, zmax=1),
                          r + 1, c + 1)
            fig.add_trace(go.Heatmap(z=m, colorscale=scale, opacity=opacity, zmin=-lim if signed else 0, zmax=lim,
                                     showscale=shared and r == 0 and c == 0, hovertemplate="value %{z:.3g}<extra></extra>",
                                     colorbar=dict(len=0.5, thickness=12)), r + 1, c + 1)
            if outlines and outlines[r] is not None:
                y0, y1 = outlines[r]
                fig.add_shape(type="rect", x0=-0.5, x1=base.shape[1] - 0.5, y0=y0 - 0.5, y1=y1 - 0.5,
                              line=dict(color="#00e676", width=2), row=r + 1, col=c + 1)
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False)
    fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False, autorange="reversed")
    for i in range(1, rows * cols + 1):
        fig.layout[f"yaxis{'' if i == 1 else i}"].scaleanchor = f"x{'' if i == 1 else i}"
    h, w = images.shape[-2:]
    fig.update_layout(height=max(220, int(rows * cell * h / w) + 60), width=None,
                      margin=dict(l=0, r=90, t=40, b=0))
    fig.for_each_annotation(lambda a: a.update(font_size=11))
    return fig


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
