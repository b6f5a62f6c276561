"""Loss-landscape figures: interpolation curves, contour / heat map / 3-D surface, trajectory."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots


def curves(alphas: np.ndarray, train, test, x_title: str = "α (0 = model A, 1 = model B)") -> go.Figure:
    """Loss (left axis) and accuracy (right axis); train solid, test dashed. Stored BatchNorm statistics
    in blue (loss) and red (accuracy); where a curve also has figures with recomputed statistics, those
    in green and orange. Non-finite points are gaps (NaN), never joined across."""
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    for curve, name, dash in ((train, "train", "solid"), (test, "test", "dash")):
        if curve is None:
            continue
        both = curve.loss_recomputed is not None
        sets = [(", stored BN statistics" if both else "", curve.loss, curve.accuracy, "#1f77b4", "#d62728")]
        if both:
            sets.append((", recomputed BN statistics", curve.loss_recomputed, curve.accuracy_recomputed,
                         "#2ca02c", "#ff7f0e"))
        for what, loss, acc, c_loss, c_acc in sets:
            fig.add_trace(go.Scatter(x=alphas, y=gaps(loss), name=f"{name} loss{what}",
                                     line=dict(color=c_loss, dash=dash)))
            fig.add_trace(go.Scatter(x=alphas, y=100 * gaps(acc), name=f"{name} accuracy{what}",
                                     line=dict(color=c_acc, dash=dash)), secondary_y=True)
    for x in (0, 1):
        if alphas.min() <= x <= alphas.max():
            fig.add_vline(x=x, line=dict(color="#999", dash="dot"))
    fig.update_xaxes(title=x_title)
    fig.update_yaxes(title="cross-entropy loss", secondary_y=False, rangemode="tozero")
    fig.update_yaxes(title="accuracy (%)", range=[0, 100], secondary_y=True)
    fig.update_layout(height=420, margin=dict(l=0, r=0, t=30, b=0), legend=dict(orientation="h", y=-0.2))
    return fig


def gaps(values) -> np.ndarray:
    """Floats with every non-finite value (NaN, ±inf) as NaN: Plotly draws those as gaps."""
    v = np.asarray(values, dtype=float)
    return np.where(np.isfinite(v), v, np.nan)


def _z(values: np.ndarray, log: bool) -> np.ndarray:
    v = gaps(values)
    return np.log10(v + 0.1) if log else v


def contour(xs, ys, loss, log=False, zrange=None, path=None, title="", labels=("direction 1", "direction 2")) -> go.Figure:
    """Contour map with labelled levels; the centre (or the path's end) marked."""
    z = _z(loss, log)
    fig = go.Figure(go.Contour(x=xs, y=ys, z=z, colorscale="Viridis", zmin=zrange[0] if zrange else None,
                               zmax=zrange[1] if zrange else None,
                               contours=dict(showlabels=True, labelfont=dict(size=10, color="white")),
                               colorbar=dict(title="log₁₀(loss + 0.1)" if log else "loss")))
    if path is not None:
        px_, py_, names = path
        fig.add_trace(go.Scatter(x=px_, y=py_, mode="lines+markers+text", text=names, textposition="top center",
                                 line=dict(color="#ff4136", width=2), marker=dict(size=7), name="training path"))
    else:
        fig.add_trace(go.Scatter(x=[0], y=[0], mode="markers", marker=dict(symbol="x", size=12, color="#ff4136"),
                                 name="the model"))
    fig.update_layout(title=title, height=480, margin=dict(l=0, r=0, t=40 if title else 10, b=0),
                      xaxis_title=labels[0], yaxis_title=labels[1], showlegend=path is not None,
                      legend=dict(orientation="h", y=-0.18))
    return fig


def heatmap(xs, ys, loss, log=False, zrange=None, title="") -> go.Figure:
    fig = go.Figure(go.Heatmap(x=xs, y=ys, z=_z(loss, log), colorscale="Viridis",
                               zmin=zrange[0] if zrange else None, zmax=zrange[1] if zrange else None,
                               colorbar=dict(title="log₁₀(loss + 0.1)" if log else "loss")))
    fig.add_trace(go.Scatter(x=[0], y=[0], mode="markers", marker=dict(symbol="x", size=12, color="#ff4136"),
                             showlegend=False))
    fig.update_layout(title=title, height=480, margin=dict(l=0, r=0, t=40 if title else 10, b=0),
                      xaxis_title="direction 1", yaxis_title="direction 2")
    return fig


def surface3d(xs, ys, loss, accuracy=None, log=False, zrange=None, title="") -> go.Figure:
    """A rotatable 3-D surface; with `accuracy`, a second surface (right-hand scale, 0–1 as loss units)."""
    z = _z(loss, log)
    fig = go.Figure(go.Surface(x=xs, y=ys, z=z, colorscale="RdBu_r", cmin=zrange[0] if zrange else None,
                               cmax=zrange[1] if zrange else None, name="loss",
                               colorbar=dict(title="log₁₀(loss + 0.1)" if log else "loss", x=1.0)))
    if accuracy is not None:
        fig.add_trace(go.Surface(x=xs, y=ys, z=np.asarray(accuracy), colorscale="Greens", opacity=0.55,
                                 showscale=False, name="accuracy"))
    i, j = np.argmin(np.abs(ys)), np.argmin(np.abs(xs))
    fig.add_trace(go.Scatter3d(x=[xs[j]], y=[ys[i]], z=[z[i, j]], mode="markers",
                               marker=dict(size=5, color="#111"), name="the model"))
    fig.update_layout(title=title, height=560, margin=dict(l=0, r=0, t=40 if title else 10, b=0),
                      scene=dict(xaxis_title="direction 1", yaxis_title="direction 2",
                                 zaxis_title="log₁₀(loss + 0.1)" if log else "loss",
                                 zaxis=dict(range=list(zrange)) if zrange else {}),
                      showlegend=False)
    return fig
