"""Plotly figures shared by pages. Every figure has Plotly's own PNG download button."""

from __future__ import annotations

import numpy as np
import plotly.express as px
import plotly.graph_objects as go
from plotly.subplots import make_subplots

CONFIG = {"displaylogo": False, "toImageButtonOptions": {"format": "png", "scale": 2}}


def image_grid(images: np.ndarray, titles: list[str], cols: int = 8, height_per_row: int = 150) -> go.Figure:
    """images: (N, C, H, W) floats in [0, 1]; one small panel each with a title."""
    imgs = np.asarray(images)
    imgs = imgs[:, 0] if imgs.shape[1] == 1 else imgs.transpose(0, 2, 3, 1)  # (N, H, W[, 3])
    n = len(imgs)
    fig = px.imshow(
        (imgs * 255).astype(np.uint8),
        facet_col=0,
        facet_col_wrap=cols,
        binary_string=True,
        facet_col_spacing=0.01,
        facet_row_spacing=0.12,
    )
    for ann in fig.layout.annotations:
        i = int(ann.text.split("=")[-1])
        ann.text = titles[i] if i < len(titles) else ""
        ann.font.size = 11
    rows = -(-n // cols)
    fig.update_layout(height=max(180, rows * height_per_row), margin=dict(l=0, r=0, t=30, b=0))
    fig.update_xaxes(showticklabels=False).update_yaxes(showticklabels=False)
    return fig


def confusion_heatmap(matrix: np.ndarray, classes: list[str]) -> go.Figure:
    fig = px.imshow(
        matrix,
        x=classes,
        y=classes,
        text_auto=True,
        color_continuous_scale="Blues",
        labels=dict(x="predicted", y="true", color="count"),
        aspect="equal",
    )
    fig.update_xaxes(type="category", side="top").update_yaxes(type="category")
    fig.update_layout(margin=dict(l=0, r=0, t=40, b=0), height=420)
    return fig


def training_curves(metrics: list[dict], title: str = "") -> go.Figure:
    """Loss (left axis) and accuracy (right axis) per epoch, train solid and test dashed."""
    epochs = [m["epoch"] for m in metrics]
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    for key, dash in (("train", "solid"), ("test", "dash")):
        fig.add_trace(
            go.Scatter(
                x=epochs,
                y=[m[f"{key}_loss"] for m in metrics],
                name=f"{key} loss",
                line=dict(color="#1f77b4", dash=dash),
                mode="lines+markers",
            )
        )
        fig.add_trace(
            go.Scatter(
                x=epochs,
                y=[100 * m[f"{key}_acc"] for m in metrics],
                name=f"{key} accuracy",
                line=dict(color="#d62728", dash=dash),
                mode="lines+markers",
            ),
            secondary_y=True,
        )
    fig.update_xaxes(title="epoch", dtick=1 if len(epochs) <= 20 else None)
    fig.update_yaxes(title="cross-entropy loss", secondary_y=False, rangemode="tozero")
    fig.update_yaxes(title="accuracy (%)", secondary_y=True, range=[0, 100], dtick=20, showgrid=False)
    fig.update_layout(
        title=title,
        height=330,
        margin=dict(l=0, r=0, t=40 if title else 10, b=0),
        legend=dict(orientation="h", y=-0.25),
    )
    return fig


def montage_png(rows: list[np.ndarray], titles: list[list[str]], tile: int = 112) -> bytes:
    """A PNG of image rows (each (K, C, H, W) floats in [0, 1]), every image scaled up by nearest
    neighbour so that its longer side is `tile` pixels, with its title above it: a figure to put in a
    paper or a slide."""
    import io

    from PIL import Image, ImageDraw

    head, pad = 16, 4
    h, w = np.asarray(rows[0]).shape[-2:]
    th, tw = (tile, max(1, round(tile * w / h))) if h >= w else (max(1, round(tile * h / w)), tile)
    cols = max(len(r) for r in rows)
    sheet = Image.new("RGB", (cols * (tw + pad) + pad, len(rows) * (th + head + pad) + pad), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (row, names) in enumerate(zip(rows, titles)):
        for j, img in enumerate(np.clip(np.asarray(row), 0, 1)):
            arr = (img.transpose(1, 2, 0) * 255).round().astype(np.uint8)
            im = Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr).convert("RGB")
            x, y = pad + j * (tw + pad), pad + i * (th + head + pad)
            sheet.paste(im.resize((tw, th), Image.NEAREST), (x, y + head))
            draw.text((x, y + 2), names[j][: max(4, tw // 6)] if j < len(names) else "", fill="black")  # ~6 px a letter
    buf = io.BytesIO()
    sheet.save(buf, format="PNG")
    return buf.getvalue()
