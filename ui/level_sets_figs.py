"""Figures of the Level-sets page: the traversal's curves and a triangle of outputs."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"]


def curves(res, compact: bool) -> go.Figure:
    lst, k = res.lst, len(res.targets)
    names = (
        "confidence in the source class",
        "distance to the target",
        "SSIM to the target",
        "accepted (running share)",
    )
    fig = make_subplots(rows=2 if compact else 1, cols=2 if compact else 4, subplot_titles=names)
    at = [(1, 1), (1, 2), (2, 1), (2, 2)] if compact else [(1, 1), (1, 2), (1, 3), (1, 4)]
    steps = np.arange(len(lst.confidence))
    for i in range(k):
        name, line = f"→ #{res.targets[i]}", dict(color=PALETTE[i % len(PALETTE)])
        common = dict(name=name, legendgroup=name, line=line)
        fig.add_trace(go.Scatter(x=steps, y=lst.confidence[:, i], **common), *at[0])
        fig.add_trace(go.Scatter(x=steps, y=lst.dist_l2[:, i], showlegend=False, **common), *at[1])
        fig.add_trace(
            go.Scatter(
                x=steps,
                y=lst.dist_linf[:, i],
                showlegend=False,
                name=name,
                legendgroup=name,
                line=dict(dash="dot", **line),
            ),
            *at[1],
        )
        fig.add_trace(go.Scatter(x=steps, y=lst.ssim[:, i], showlegend=False, **common), *at[2])
        rate = np.cumsum(lst.accepted[:, i]) / np.arange(1, len(lst.accepted) + 1)
        fig.add_trace(go.Scatter(x=steps[1:], y=rate, showlegend=False, **common), *at[3])
    for y in (float(lst.p0[0]), float(lst.p0[0]) - res.delta):
        fig.add_hline(y=y, line=dict(dash="dot", color="#999"), row=at[0][0], col=at[0][1])
    # a share is in [0, 1]: left to itself, a constant share of 1 (every step accepted) was drawn
    # in the middle of a 0-2 axis
    fig.update_yaxes(range=[0, 1.05], tickformat=".0%", row=at[3][0], col=at[3][1])
    fig.update_xaxes(title_text="step", **({"dtick": 1} if len(lst.accepted) <= 10 else {"tickformat": "d"}))
    fig.update_layout(
        height=560 if compact else 340,
        margin=dict(l=0, r=0, t=40, b=0),
        legend=dict(orientation="h", y=-0.18 if compact else -0.3),
    )
    return fig


def triangle_figure(tri, pair: tuple[int, int]) -> go.Figure:
    """The triangle (source, output a+1, output b+1) of `pair` = (a, b) in its true shape, coloured by p(c)."""
    first, second = pair[0] + 1, pair[1] + 1
    fig = go.Figure(
        go.Scatter(
            x=tri.xy[:, 0],
            y=tri.xy[:, 1],
            mode="markers",
            marker=dict(
                size=14, color=tri.confidence, cmin=0, cmax=1, colorscale="Viridis", colorbar=dict(title="p(c)")
            ),
            text=[f"t₁={a:.1f} t₂={b:.1f}: p={p:.3f}" for (a, b), p in zip(tri.weights, tri.confidence)],
            hoverinfo="text",
        )
    )
    corners = tri.xy[
        [int(np.argmin(tri.weights.sum(1))), int(np.argmax(tri.weights[:, 0])), int(np.argmax(tri.weights[:, 1]))]
    ]
    for (x, y), label in zip(corners, ("source", f"output {first}", f"output {second}")):
        fig.add_annotation(x=x, y=y, text=label, showarrow=False, yshift=-16 if label == "source" else 16)
    fig.update_layout(
        height=300,
        margin=dict(l=0, r=0, t=30, b=0),
        title=f"Triangle: source, outputs {first} and {second}",
        xaxis=dict(visible=False),
        yaxis=dict(visible=False, scaleanchor="x"),
    )
    return fig
