"""Plotly figures shared by pages. Every figure has Plotly's own PNG download button."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.express as px
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from lenscape.ui.common import plot_text

CONFIG = {"displaylogo": False, "toImageButtonOptions": {"format": "png", "scale": 2}}


MAIN_WIDTH = 920  # pixels: the main column of a 1,400-px window with the sidebar open
TITLE_PX, GRID_GAP = 16, 6  # a title line above each picture; the space between pictures


def image_grid(images: np.ndarray, titles: list[str], cols: int = 8, height_per_row: int = 150) -> go.Figure:
    """images: (N, C, H, W) floats in [0, 1]; one small picture each with its title (text, shown as
    written: class names come from whoever made the model) above it, rows
    of `cols`, about `height_per_row` pixels a row (less where the rows would be wider than the main
    column). Draw it with st.plotly_chart(..., width="content"): its size is its own.

    The pictures are placed on one hidden pair of axes, as the saliency grid's are. px.imshow's facets
    give every image an axis pair of its own, which the browser lays out one by one: a gallery of 32
    was 4,500 SVG elements and about 1.5 s of a CPU core each time a page run drew it."""
    imgs = np.clip(np.asarray(images, dtype=np.float64), 0.0, 1.0)
    n, _, h, w = imgs.shape
    cols = max(1, min(cols, n))
    rows = max(1, -(-n // cols))
    tall = max(16, height_per_row - TITLE_PX - GRID_GAP)
    wide = min(max(1, round(tall * w / h)), (MAIN_WIDTH + GRID_GAP) // cols - GRID_GAP)
    tall = max(1, round(wide * h / w))
    scale = max(1, -(-max(tall, wide) // max(h, w)))  # pixels repeated: sharp, not blurred, when enlarged
    width, height = cols * (wide + GRID_GAP) - GRID_GAP, rows * (TITLE_PX + tall + GRID_GAP)
    pictures, notes = [], []
    for i, img in enumerate(imgs):
        r, c = divmod(i, cols)
        x, top = c * (wide + GRID_GAP), r * (TITLE_PX + tall + GRID_GAP) + TITLE_PX
        rgb = (img.transpose(1, 2, 0) * 255).round().astype(np.uint8)
        rgb = np.repeat(rgb, 3, axis=2) if rgb.shape[2] == 1 else rgb
        pictures.append(picture(png_uri(rgb, scale), x, top, wide, tall, width=width))
        title = plot_text(titles[i]) if i < len(titles) else ""
        notes.append(note(title, x + wide / 2, top - 2, width=width, size=11 if wide >= 64 else 9, yanchor="bottom"))
    return pictures_figure(width, height, pictures, notes)


def picture(uri: str, x: float, top: float, wide: float, tall: float, *, width: int = MAIN_WIDTH) -> dict:
    """A layout picture placed in pixels from the figure's top left (pictures_figure turns y into the paper's)."""
    return dict(
        source=uri,
        xref="paper",
        yref="paper",
        x=x / width,
        y=top,
        sizex=wide / width,
        sizey=tall,
        xanchor="left",
        yanchor="top",
        sizing="stretch",
        layer="above",
    )


def note(
    text: str,
    x: float,
    top: float,
    *,
    width: int = MAIN_WIDTH,
    size: int = 12,
    xanchor: str = "center",
    yanchor: str = "top",
) -> dict:
    """An annotation placed in pixels from the figure's top left (pictures_figure turns y into the paper's)."""
    return dict(
        text=text,
        x=x / width,
        y=top,
        xref="paper",
        yref="paper",
        xanchor=xanchor,
        yanchor=yanchor,
        showarrow=False,
        font=dict(size=size),
        align="left" if xanchor == "left" else "center",
    )


def pictures_figure(
    width: int, height: float, pictures: list[dict], notes: list[dict], shapes: Sequence[dict] = ()
) -> go.Figure:
    """A figure of `width` × `height` pixels holding only pictures and notes (placed by picture() and
    note(), in pixels from the top) and shapes (in paper coordinates), on one hidden, fixed pair of axes."""
    for p in pictures:
        p.update(y=1 - p["y"] / height, sizey=p["sizey"] / height)
    for n in notes:
        n.update(y=1 - n["y"] / height)
    axis = dict(visible=False, range=[0, 1], fixedrange=True)
    return go.Figure(
        layout=dict(
            width=width,
            height=int(height),
            margin=dict(l=0, r=0, t=0, b=0),
            images=pictures,
            annotations=notes,
            shapes=list(shapes),
            xaxis=axis,
            yaxis=axis,
            plot_bgcolor="white",
            paper_bgcolor="white",
            dragmode=False,
        )
    )


def png_uri(rgb: np.ndarray, scale: int = 1) -> str:
    """(H, W, 3) uint8 → a PNG data URI, pixels repeated `scale` times (sharp when enlarged)."""
    import base64
    import io

    from PIL import Image

    if scale > 1:
        rgb = rgb.repeat(scale, 0).repeat(scale, 1)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


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
