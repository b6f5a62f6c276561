"""Loss-landscape figures: interpolation curves, contour / heat map / 3-D surface, trajectory."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots


def curves(
    alphas: np.ndarray, train, test, x_title: str = "α (0 = model A, 1 = model B)", marks: tuple[float, ...] = (0, 1)
) -> go.Figure:
    """Loss (left axis) and accuracy (right axis); train solid, test dashed. Stored BatchNorm statistics
    in blue (loss) and red (accuracy); where a curve also has figures with recomputed statistics, those
    in green and orange. Non-finite points are gaps (NaN), never joined across. Dotted vertical lines
    at `marks`: the models (the two checkpoints of an interpolation; the model alone on a line)."""
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    for curve, name, dash in ((train, "train", "solid"), (test, "test", "dash")):
        if curve is None:
            continue
        both = curve.loss_recomputed is not None
        sets = [(", stored BN statistics" if both else "", curve.loss, curve.accuracy, "#1f77b4", "#d62728")]
        if both:
            sets.append(
                (", recomputed BN statistics", curve.loss_recomputed, curve.accuracy_recomputed, "#2ca02c", "#ff7f0e")
            )
        for what, loss, acc, c_loss, c_acc in sets:
            fig.add_trace(
                go.Scatter(x=alphas, y=gaps(loss), name=f"{name} loss{what}", line=dict(color=c_loss, dash=dash))
            )
            fig.add_trace(
                go.Scatter(
                    x=alphas, y=100 * gaps(acc), name=f"{name} accuracy{what}", line=dict(color=c_acc, dash=dash)
                ),
                secondary_y=True,
            )
    for x in marks:
        if alphas.min() <= x <= alphas.max():
            fig.add_vline(x=x, line=dict(color="#999", dash="dot"))
    fig.update_xaxes(title=x_title)
    fig.update_yaxes(title="cross-entropy loss", secondary_y=False, rangemode="tozero")
    fig.update_yaxes(title="accuracy (%)", range=[0, 100], dtick=20, showgrid=False, secondary_y=True)
    fig.update_layout(height=420, margin=dict(l=0, r=0, t=30, b=0), legend=dict(orientation="h", y=-0.2))
    return fig


def gaps(values) -> np.ndarray:
    """Floats with every non-finite value (NaN, ±inf) as NaN: Plotly draws those as gaps."""
    v = np.asarray(values, dtype=float)
    return np.where(np.isfinite(v), v, np.nan)


def _z(values: np.ndarray, log: bool) -> np.ndarray:
    v = gaps(values)
    return np.log10(v + 0.1) if log else v


def contour(
    xs, ys, loss, log=False, zrange=None, path=None, title="", labels=("direction 1", "direction 2")
) -> go.Figure:
    """Contour map with labelled levels; the centre (or the path's end) marked."""
    z = _z(loss, log)
    fig = go.Figure(
        go.Contour(
            x=xs,
            y=ys,
            z=z,
            colorscale="Viridis",
            zmin=zrange[0] if zrange else None,
            zmax=zrange[1] if zrange else None,
            contours=dict(showlabels=True, labelfont=dict(size=10, color="white")),
            colorbar=dict(title="log₁₀(loss + 0.1)" if log else "loss"),
        )
    )
    if path is not None:
        px_, py_, names = path
        shown = spaced(np.asarray(px_), np.asarray(py_), np.ptp(xs) or 1.0, np.ptp(ys) or 1.0)
        fig.add_trace(
            go.Scatter(
                x=px_,
                y=py_,
                mode="lines+markers+text",
                hovertext=names,
                hoverinfo="text",
                text=[n if i in shown else "" for i, n in enumerate(names)],
                textposition="top right",
                textfont=dict(color="white"),
                line=dict(color="#ff4136", width=2),
                marker=dict(size=7),
                name="training path",
            )
        )
    else:
        fig.add_trace(
            go.Scatter(
                x=[0], y=[0], mode="markers", marker=dict(symbol="x", size=12, color="#ff4136"), name="the model"
            )
        )
    fig.update_layout(
        title=title,
        height=480,
        margin=dict(l=0, r=0, t=40 if title else 10, b=0),
        xaxis_title=labels[0],
        yaxis_title=labels[1],
        showlegend=path is not None,
        legend=dict(orientation="h", y=-0.18),
    )
    return square(fig, xs, ys)


def spaced(x: np.ndarray, y: np.ndarray, width: float, height: float, gap: float = 0.07) -> set[int]:
    """Indices of the points to label so that no two labels overlap: the last point (the final
    model), then, going back, each point at least `gap` of the plot's size from every one labelled;
    the others are named on hover."""
    kept: list[int] = []
    for i in range(len(x) - 1, -1, -1):
        if all(np.hypot((x[i] - x[j]) / width, (y[i] - y[j]) / height) >= gap for j in kept):
            kept.append(i)
    return set(kept)


def square(fig: go.Figure, xs, ys) -> go.Figure:
    """A square plotting area whatever the two axes' ranges (the plane's two directions are drawn at
    one size, as in the paper's figures), in a figure about as wide as it is tall, colour bar included:
    draw it with st.plotly_chart(..., width="content")."""
    ratio = (np.ptp(xs) or 1.0) / (np.ptp(ys) or 1.0)
    fig.update_layout(width=fig.layout.height + 90)
    fig.update_xaxes(constrain="domain")
    return fig.update_yaxes(scaleanchor="x", scaleratio=ratio, constrain="domain")


def heatmap(xs, ys, loss, log=False, zrange=None, title="", colorbar: str | None = None) -> go.Figure:
    fig = go.Figure(
        go.Heatmap(
            x=xs,
            y=ys,
            z=_z(loss, log),
            colorscale="Viridis",
            zmin=zrange[0] if zrange else None,
            zmax=zrange[1] if zrange else None,
            colorbar=dict(title=colorbar or ("log₁₀(loss + 0.1)" if log else "loss")),
        )
    )
    fig.add_trace(
        go.Scatter(x=[0], y=[0], mode="markers", marker=dict(symbol="x", size=12, color="#ff4136"), showlegend=False)
    )
    fig.update_layout(
        title=title,
        height=480,
        margin=dict(l=0, r=0, t=40 if title else 10, b=0),
        xaxis_title="direction 1",
        yaxis_title="direction 2",
    )
    return square(fig, xs, ys)


def surface3d(xs, ys, loss, accuracy=None, log=False, zrange=None, title="") -> go.Figure:
    """A rotatable 3-D surface; with `accuracy`, a second surface (right-hand scale, 0–1 as loss units)."""
    z = _z(loss, log)
    fig = go.Figure(
        go.Surface(
            x=xs,
            y=ys,
            z=z,
            colorscale="RdBu_r",
            cmin=zrange[0] if zrange else None,
            cmax=zrange[1] if zrange else None,
            name="loss",
            colorbar=dict(title="log₁₀(loss + 0.1)" if log else "loss", x=1.0),
        )
    )
    if accuracy is not None:
        fig.add_trace(
            go.Surface(
                x=xs, y=ys, z=np.asarray(accuracy), colorscale="Greens", opacity=0.55, showscale=False, name="accuracy"
            )
        )
    i, j = np.argmin(np.abs(ys)), np.argmin(np.abs(xs))
    fig.add_trace(
        go.Scatter3d(
            x=[xs[j]], y=[ys[i]], z=[z[i, j]], mode="markers", marker=dict(size=5, color="#111"), name="the model"
        )
    )
    fig.update_layout(
        title=title,
        height=560,
        margin=dict(l=0, r=0, t=40 if title else 10, b=0),
        scene=dict(
            xaxis_title="direction 1",
            yaxis_title="direction 2",
            zaxis_title="log₁₀(loss + 0.1)" if log else "loss",
            zaxis=dict(range=list(zrange)) if zrange else {},
        ),
        showlegend=False,
    )
    return fig


def surface_figure(view: str, res, loss, acc, log: bool, zrange, title: str) -> go.Figure:
    """One panel of a 2-D surface in the chosen view ("3-D surface", "contour" or "heat map")."""
    if view == "3-D surface":
        return surface3d(res.xs, res.ys, loss, acc, log, zrange, title)
    if view == "contour":
        return contour(res.xs, res.ys, loss, log, zrange, title=title)
    return heatmap(res.xs, res.ys, loss, log, zrange, title=title)


def eigenvalue_figure(values: np.ndarray) -> go.Figure:
    """The Hessian's top eigenvalues (restarts, k): one marker per random start, the starts side by
    side around each eigenvalue's number (converged starts agree and would hide each other)."""
    n, k = values.shape
    fig = go.Figure(
        [
            go.Scatter(
                x=np.arange(1, k + 1) + 0.08 * (r - (n - 1) / 2),
                y=row,
                mode="markers",
                marker=dict(size=10),
                name=f"start {r + 1}",
            )
            for r, row in enumerate(values)
        ]
    )
    fig.update_layout(
        height=360,
        margin=dict(l=0, r=0, t=10, b=0),
        xaxis_title="eigenvalue (by magnitude)",
        yaxis_title="λ",
        xaxis=dict(dtick=1),
    )
    return fig


def density_figure(density) -> tuple[go.Figure, float]:
    """The eigenvalue density on a log scale (as PyHessian draws it), and the width of each Ritz
    value's Gaussian."""
    lo, hi = float(density.nodes.min()), float(density.nodes.max())
    pad = 0.05 * (hi - lo or 1.0)
    grid = np.linspace(lo - pad, hi + pad, 600)
    sigma = (hi - lo or 1.0) / 100
    fig = go.Figure(go.Scatter(x=grid, y=density.on(grid, sigma) + 1e-12, mode="lines"))
    fig.update_layout(
        height=280,
        margin=dict(l=0, r=0, t=10, b=0),
        xaxis_title="eigenvalue",
        yaxis=dict(title="density", type="log", exponentformat="power"),
    )  # not 1µ, 1n, 1p
    return fig, sigma
