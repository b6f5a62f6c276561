"""Loss-landscape page pieces: interpolation, random-direction surfaces (two models side by side on
one colour scale), the training trajectory and curvature."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import streamlit as st

from lenscape.analysis.landscape import NORMS, Curve, DirectionConfig, batchnorm_layers
from lenscape.backend.jobs import job, ref
from lenscape.backend.limits import limits, seconds_per_example
from lenscape.backend.landscape_tasks import (
    BNSubset,
    ConvexityConfig,
    EvalSet,
    HessianConfig,
    InterpolationConfig,
    SurfaceConfig,
    TrajectoryConfig,
)
from lenscape.models.zoo import LoadedModel
from lenscape.ui.common import backend, model_options, plain, plot_text
from lenscape.ui.figures import CONFIG
from lenscape.ui.jobs import job_panel, reopen, submit
from lenscape.ui.landscape_figs import contour, curves, density_figure, eigenvalue_figure, gaps, heatmap, surface_figure
from lenscape.ui.pickers import bound, param, pick_b, pick_model, set_picker
from lenscape.ui.url_widgets import flag, number_in, one_of

TEACHING = """
- **Why filter-normalized directions?** A network with BatchNorm (or ReLUs) computes the same function when
  a layer's weights are scaled up by 10: the loss surface around the bigger weights looks 10× flatter along a
  random direction of fixed size, which says nothing about the function. Scaling each filter of the direction
  to the norm of the weight filter it perturbs removes that scale, so surfaces of different models can be
  compared (Li et al. 2018). Biases and BatchNorm parameters are left out of the direction.
- **What a 2-D slice shows**: the loss on one plane through millions of dimensions. A smooth bowl says the
  minimum is not chaotic along those directions; it does not prove convexity (the curvature tab shows the
  Hessian's most negative and positive eigenvalues for that). Random planes also miss the path training
  took: the trajectory tab uses the path's own principal directions instead.
- **Interpolation** between two checkpoints (BatchNorm statistics included) shows whether a straight line
  connects them at low loss (the same basin) or crosses a barrier.
"""


BN_NOTE = (
    "**Why the two differ:** in eval mode BatchNorm normalizes with the running statistics stored at the "
    "trained weights; away from them each layer's inputs have another mean and variance, so those stale "
    "statistics mis-scale every layer, and much of a BatchNorm model's steep walls is that mismatch. "
    "Recomputed: at each point a train-mode pass over a fixed, seeded subset of "
    f"{BNSubset().n_examples} training examples sets the statistics for those weights, then the loss is "
    "evaluated in eval mode. The official code keeps the stored statistics; recomputing goes beyond it."
)


def _recompute_bn(models: list[LoadedModel], key: str) -> BNSubset | None:
    """The checkbox, shown only where a model has BatchNorm; None when off or not shown."""
    if not any(batchnorm_layers(m.model) for m in models):
        return None
    on = bound(
        param(key, "bn"),
        f"{key}.bn",
        flag,
        lambda: st.checkbox(
            "Recompute BatchNorm statistics at each point",
            False,
            key=f"{key}.bn",
            help="Also evaluate every point with BatchNorm statistics measured at that point: a train-mode pass over a "
            f"fixed, seeded subset of {BNSubset().n_examples} training examples, then eval. Both are shown. The "
            "official code keeps the model's own statistics everywhere. Costs a second evaluation per point; "
            "models without BatchNorm are evaluated once.",
        ),
        False,
    )
    return BNSubset() if on else None


def _eval_set(key: str) -> EvalSet:
    c = st.columns(2)
    split = bound(
        param(key, "split"),
        f"{key}.split",
        one_of(["test", "train"]),
        lambda: c[0].radio(
            "Evaluated on",
            ["test", "train"],
            horizontal=True,
            key=f"{key}.split",
            help="train: the examples and labels it was trained on",
        ),
        "test",
    )
    n = _number(key, "n", c[1], "Examples (0 = all)", 0, 60000, 1000, step=500)
    return EvalSet(split=split, n_examples=int(n))


def _number(key: str, name: str, col, label: str, lo, hi, default, wkey: str | None = None, **kwargs):
    """A number input keyed f"{key}.{name}" (or `wkey`) bound to ?<tab>.<name>=."""
    wkey = wkey or f"{key}.{name}"
    return bound(
        param(key, name),
        wkey,
        number_in(lo, hi, type(default)),
        lambda: col.number_input(label, lo, hi, default, key=wkey, **kwargs),
        default,
    )


def _estimate(lm: LoadedModel, points: int, n_examples: int) -> float:
    """Seconds for `points` evaluations of `n_examples`, from a timed probe pass (backend.limits: the
    estimate the job itself checks)."""
    return points * max(n_examples, 1) * seconds_per_example(lm, backend().device)


def _cost_gate(lm: LoadedModel, points: int, data: EvalSet, key: str, bn: BNSubset | None = None) -> bool:
    """Show the cost; False (button disabled) when the estimate exceeds the user's limit. With `bn`, each
    point is evaluated twice, after a pass over the subset."""
    n = data.n_examples or 10_000
    n = n if bn is None else 2 * n + bn.n_examples
    est = _estimate(lm, points, n)
    most = int(limits().job_seconds)
    limit = st.number_input(
        "Time limit (s)",
        10,
        max(most, 10),
        min(600, most),
        step=60,
        key=f"{key}.limit",
        help=f"Grids estimated to take longer are not started; raise it if you mean it (up to "
        f"this server's {most:,} s).",
    )
    shown = f"{est:,.0f}" if est >= 10 else f"{est:.1f}"
    st.caption(
        f"{points:,} points × {n:,} examples = {points * n:,} forward passes, about **{shown} s** on "
        "this device (estimated from a timed forward pass of this model)."
    )
    if est > limit:
        st.warning(
            f"Estimated {est:,.0f} s is over the limit of {limit:,} s: lower the resolution or the number "
            "of examples, or raise the limit."
        )
        return False
    return True


def interpolation_tab(key: str = "land.interp") -> None:
    reopen(
        f"{key}.job",
        "landscape_interpolation",
        lambda c: {
            **set_picker(f"{key}.a", c.a, current=True),
            **set_picker(f"{key}.b", c.b),
            f"{key}.lo": c.lo,
            f"{key}.hi": c.hi,
            f"{key}.points": c.points,
            f"{key}.n": c.n_examples,
            f"{key}.bn": c.recompute_bn is not None,
        },
    )
    c = st.columns(2)
    with c[0]:  # the final checkpoints of two seeds by default: the barrier between two solutions
        a = pick_model(f"{key}.a", "Model A", epoch_param=param(key, "epoch"), current=True)
    if a is None:
        return
    with c[1]:
        b = pick_b(f"{key}.b", "Model B", a, param(key, "b"), param(key, "b_epoch"))
    if b is None:
        return
    c = st.columns(4)
    lo = _number(key, "lo", c[0], "α from", -5.0, 5.0, -0.5, step=0.1)
    hi = _number(key, "hi", c[1], "α to", -5.0, 5.0, 1.5, step=0.1)
    points = _number(key, "points", c[2], "Points", 3, 401, 21)
    n = _number(key, "n", c[3], "Examples per split (0 = all)", 0, 60000, 1000, step=500)
    if a.data != b.data:
        st.error("These models were trained on different data sets: interpolate between checkpoints of one data set.")
        return
    bn = _recompute_bn([a], key)
    if st.button("Interpolate", type="primary", key=f"{key}.run", disabled=lo >= hi):
        cfg = InterpolationConfig(
            a=ref(a), b=ref(b), lo=float(lo), hi=float(hi), points=int(points), n_examples=int(n), recompute_bn=bn
        )
        submit(
            f"{key}.job",
            job(
                "landscape_interpolation",
                cfg,
                (ref(a), ref(b)),
                f"interpolation {a.name} @{a.epoch} → {b.name} @{b.epoch}",
            ),
        )
    job_panel(f"{key}.job", lambda res: _show_interpolation(res[0], key, bool(batchnorm_layers(a.model))))


def _show_interpolation(res, key: str, batchnorm: bool = True) -> None:
    st.plotly_chart(curves(res.train.alphas, res.train, res.test), config=CONFIG, key=f"{key}.fig")
    recomputed = res.train.loss_recomputed is not None
    bn = (
        (
            "BatchNorm running statistics are interpolated too (linearly, as the official code; beyond the two "
            "checkpoints the standard deviations are extrapolated, so variances never go negative)"
            + (", or, in green and orange, recomputed at each α." if recomputed else ".")
        )
        if batchnorm
        else ""
    )
    st.caption("Solid: training set, dashed: test set. Dotted lines mark the two checkpoints (α = 0 and 1). " + bn)
    if recomputed:
        st.caption(BN_NOTE)
    losses = [res.train.loss, res.test.loss]
    if recomputed:
        losses += [res.train.loss_recomputed, res.test.loss_recomputed]
    undefined = [a for i, a in enumerate(res.train.alphas) if not all(np.isfinite(l[i]) for l in losses)]
    if undefined:
        st.warning(
            f"The loss is undefined (not a finite number) at α = {', '.join(f'{a:.3g}' for a in undefined)}: "
            "those points are gaps in the curves, not zeros."
        )
    table = pd.DataFrame(
        {
            "alpha": res.train.alphas,
            "train_loss": res.train.loss,
            "train_acc": res.train.accuracy,
            "test_loss": res.test.loss,
            "test_acc": res.test.accuracy,
        }
    )
    if recomputed:
        for split, c in (("train", res.train), ("test", res.test)):
            table[f"{split}_loss_recomputed_bn"] = c.loss_recomputed
            table[f"{split}_acc_recomputed_bn"] = c.accuracy_recomputed
    st.download_button("Curves (.csv)", table.to_csv(index=False), "interpolation.csv", key=f"{key}.csv")


def _surface_widgets(key: str, c: SurfaceConfig) -> dict:
    """The Random-directions widgets for a stored surface or line (one model: the link names one job)."""
    d, name = c.directions, (model_options().get(c.model.run_id) or {}).get("name", c.model.run_id)
    return {
        **set_picker(f"{key}.a", c.model, current=True),
        f"{key}.compare": False,
        f"{key}.dims": c.dims,
        f"{key}.norm": d.norm,
        f"{key}.ignore": d.ignore_biasbn,
        f"{key}.seed": d.seed,
        f"{key}.res.{c.dims}": c.resolution,
        f"{key}.lo": c.lo,
        f"{key}.hi": c.hi,
        f"{key}.split": c.data.split,
        f"{key}.n": c.data.n_examples,
        f"{key}.bn": c.recompute_bn is not None,
        f"{key}.names": [plot_text(f"{name} @ epoch {c.model.epoch}")],
    }


def directions_tab(key: str = "land.dirs") -> None:
    reopen(f"{key}.jobs", "landscape_surface", lambda c: _surface_widgets(key, c))
    a = pick_model(f"{key}.a", "Model", epoch_param=param(key, "epoch"), current=True)
    if a is None:
        return
    other = None
    if bound(
        param(key, "compare"),
        f"{key}.compare",
        flag,
        lambda: st.toggle(
            "Compare with a second model (same directions' seed, one colour scale)", key=f"{key}.compare"
        ),
        False,
    ):
        other = pick_b(f"{key}.b", "Second model", a, param(key, "b"))
    c = st.columns(4)
    dims = bound(
        param(key, "dims"),
        f"{key}.dims",
        one_of([2, 1]),
        lambda: c[0].radio(
            "Directions",
            [2, 1],
            horizontal=True,
            key=f"{key}.dims",
            format_func={1: "1 (a line)", 2: "2 (a plane)"}.get,
        ),
        2,
    )
    norm = bound(
        param(key, "norm"),
        f"{key}.norm",
        one_of(NORMS),
        lambda: c[1].selectbox(
            "Normalization",
            NORMS,
            key=f"{key}.norm",
            format_func={"filter": "filter-wise (the paper's)", "layer": "layer-wise", "none": "none"}.get,
        ),
        "filter",
    )
    ignore = bound(
        param(key, "ignore"),
        f"{key}.ignore",
        flag,
        lambda: c[2].checkbox("Leave out biases and BatchNorm", True, key=f"{key}.ignore"),
        True,
    )
    seed = _number(key, "seed", c[3], "Seed", 0, 1_000_000, 123)
    c = st.columns(3)
    res = _number(key, "res", c[0], "Points per axis", 3, 201, 21 if dims == 2 else 51, wkey=f"{key}.res.{dims}")
    lo = _number(key, "lo", c[1], "From", -10.0, 0.0, -1.0, step=0.1)
    hi = _number(key, "hi", c[2], "To", 0.0, 10.0, 1.0, step=0.1)
    data = _eval_set(key)
    models = [m for m in (a, other) if m is not None]
    bn = _recompute_bn(models, key)
    points = int(res) ** dims * len(models)
    ok = _cost_gate(a, points, data, key, bn)
    if st.button(
        "Compute surface" if dims == 2 else "Compute line",
        type="primary",
        key=f"{key}.run",
        disabled=not ok or lo >= hi,
    ):
        d = DirectionConfig(norm=norm, ignore_biasbn=ignore, seed=int(seed))
        submit(
            f"{key}.jobs",
            [
                job(
                    "landscape_surface",
                    SurfaceConfig(
                        model=ref(m),
                        directions=d,
                        dims=int(dims),
                        lo=float(lo),
                        hi=float(hi),
                        resolution=int(res),
                        data=data,
                        recompute_bn=bn if batchnorm_layers(m.model) else None,
                    ),
                    (ref(m),),
                    f"{dims}-D landscape of {m.name} @{m.epoch}",
                )
                for m in models
            ],
        )
        st.session_state[f"{key}.names"] = [plot_text(f"{m.name} @ epoch {m.epoch}") for m in models]  # titles
    job_panel(f"{key}.jobs", lambda results: _show_surfaces(results, key))


def _show_surfaces(results, key: str) -> None:
    names = st.session_state.get(f"{key}.names", [""] * len(results))
    if results[0].loss.shape[0] == 1:
        _show_lines(results, names, key)
        return
    c = st.columns(3)
    log = c[0].toggle("Log scale", key=f"{key}.log")
    view = c[1].radio("View", ["3-D surface", "contour", "heat map"], horizontal=True, key=f"{key}.view")
    show_acc = c[2].toggle("Accuracy as a second surface", key=f"{key}.acc")
    recomputed = any(r.loss_recomputed is not None for r in results)
    # with recomputed statistics: a row per model under its name, the panels titled by what differs
    panels = [
        [(m, "stored BatchNorm statistics" if recomputed else name, r.loss, r.accuracy)]
        + (
            [(m, "BatchNorm statistics recomputed at each point", r.loss_recomputed, r.accuracy_recomputed)]
            if r.loss_recomputed is not None
            else []
        )
        for m, (r, name) in enumerate(zip(results, names))
    ]
    z = np.concatenate([gaps(np.log10(gaps(p[2]) + 0.1) if log else p[2]).ravel() for row in panels for p in row])
    zrange = (float(np.nanmin(z)), float(np.nanmax(z))) if np.isfinite(z).any() else None  # one scale for all
    rows = panels if recomputed else [[p for row in panels for p in row]]  # a row per model, or side by side
    drawn = 0
    for row in rows:
        if recomputed:
            st.markdown(f"**{plain(names[row[0][0]])}**")
        for col, (m, title, loss, acc) in zip(st.columns(2 if recomputed else len(row)), row):
            with col:
                fig = surface_figure(view, results[m], loss, acc if show_acc else None, log, zrange, title)
                st.plotly_chart(
                    fig, config=CONFIG, key=f"{key}.fig{drawn}", width="stretch" if view == "3-D surface" else "content"
                )  # 2-D: square
                _surface_caption(results[m], loss)
                if loss is results[m].loss:  # the model's exports, once, under its stored surface
                    _exports(results[m], fig, f"{key}.{m}")
            drawn += 1
    if recomputed:
        st.caption(BN_NOTE)


def _surface_caption(res, loss) -> None:
    v = gaps(loss)
    centre = v[np.argmin(np.abs(res.ys)), np.argmin(np.abs(res.xs))]
    reused = f" · {res.reused} point evaluations reused from earlier grids" if res.reused else ""
    if np.isfinite(v).any():
        st.caption(
            f"Loss at the model: {centre:.4f} · lowest on the grid {np.nanmin(v):.4f} · highest "
            f"{np.nanmax(v):.4f}{reused}"
        )
    bad = int(np.isnan(v).sum())
    if bad:
        st.warning(
            f"{bad} of {v.size} points have no finite loss (NaN or infinite): they are gaps in the surface, not zeros."
        )


def _show_lines(results, names, key: str) -> None:
    """1-D directions: one figure per model, the curve with recomputed BatchNorm statistics beside the
    stored one where there is one."""
    cols = st.columns(len(results))
    for i, (res, col) in enumerate(zip(results, cols)):
        again = (
            {}
            if res.loss_recomputed is None
            else {"loss_recomputed": res.loss_recomputed[0], "accuracy_recomputed": res.accuracy_recomputed[0]}
        )
        line = Curve(alphas=res.xs, loss=res.loss[0], accuracy=res.accuracy[0], **again)
        with col:
            fig = curves(res.xs, None, line, x_title="step along the direction (0 = the model)", marks=(0,))
            fig.update_layout(title=names[i])
            st.plotly_chart(fig, config=CONFIG, key=f"{key}.line{i}")
            bad = [
                x
                for j, x in enumerate(res.xs)
                if not np.isfinite(line.loss[j])
                or (res.loss_recomputed is not None and not np.isfinite(line.loss_recomputed[j]))
            ]
            if bad:
                st.warning(
                    f"The loss is undefined (not a finite number) at {', '.join(f'{x:.3g}' for x in bad)}: "
                    "those points are gaps in the line, not zeros."
                )
            table = pd.DataFrame(
                {
                    "step": res.xs,
                    "loss": line.loss,
                    "accuracy": line.accuracy,
                    **{f"{k}_bn": v for k, v in again.items()},
                }
            )
            st.download_button("Line (.csv)", table.to_csv(index=False), "landscape_line.csv", key=f"{key}.line{i}.csv")
    if any(r.loss_recomputed is not None for r in results):
        st.caption(BN_NOTE)


def _exports(res, fig, key: str) -> None:
    """The model's figures (with recomputed BatchNorm statistics too, where computed) and its drawn figure."""
    arrays = {"loss": res.loss, "accuracy": res.accuracy}
    if res.loss_recomputed is not None:
        arrays.update(loss_recomputed_bn=res.loss_recomputed, accuracy_recomputed_bn=res.accuracy_recomputed)
    buf = io.BytesIO()
    np.savez(buf, xs=res.xs, ys=res.ys, **arrays)
    rows = [
        {"x": x, "y": y, **{k: v[iy, ix] for k, v in arrays.items()}}
        for iy, y in enumerate(res.ys)
        for ix, x in enumerate(res.xs)
    ]
    c = st.columns(3)
    c[0].download_button("Surface (.npz)", buf.getvalue(), "landscape.npz", key=f"{key}.npz")
    c[1].download_button("Surface (.csv)", pd.DataFrame(rows).to_csv(index=False), "landscape.csv", key=f"{key}.csv")
    if fig is not None:
        c[2].download_button(
            "Figure (.html)",
            fig.to_html(include_plotlyjs="cdn"),
            "landscape.html",
            key=f"{key}.html",
            help="A standalone page: rotate and zoom it in any browser.",
        )


def trajectory_tab(key: str = "land.traj") -> None:
    reopen(
        f"{key}.job",
        "landscape_trajectory",
        lambda c: {
            f"{key}.model": c.model.run_id,
            f"{key}.res": c.resolution,
            f"{key}.split": c.data.split,
            f"{key}.n": c.data.n_examples,
        },
    )
    lm = pick_model(
        f"{key}.model",
        "Model",
        min_checkpoints=3,
        empty="No model with 3 checkpoints or more: train one for 2 epochs or more on the Models page.",
    )
    if lm is None:
        return
    res = _number(key, "res", st, "Points per axis of the plane", 3, 101, 15)
    data = _eval_set(key)
    ok = _cost_gate(lm, int(res) ** 2, data, key)
    if st.button("Compute trajectory", type="primary", key=f"{key}.run", disabled=not ok):
        submit(
            f"{key}.job",
            job(
                "landscape_trajectory",
                TrajectoryConfig(model=ref(lm), resolution=int(res), data=data),
                (ref(lm),),
                f"trajectory of {lm.name}",
            ),
        )
    job_panel(f"{key}.job", lambda results: _show_trajectory(results[0], key))


def _show_trajectory(res, key: str) -> None:
    p, plane = res.path, res.plane
    labels = (f"1st PC: {p.explained[0]:.1%} of the variance", f"2nd PC: {p.explained[1]:.1%}")
    log = st.toggle("Log scale", key=f"{key}.log")
    fig = contour(
        plane.xs,
        plane.ys,
        plane.loss,
        log,
        path=(p.coords[:, 0], p.coords[:, 1], [f"ep {e}" for e in res.epochs]),
        labels=labels,
    )
    st.plotly_chart(fig, config=CONFIG, key=f"{key}.fig", width="content")
    st.caption(
        "The path of the checkpoints (θₑ − θ_final projected on the two principal directions of the path; "
        "it ends at the origin, the final model) over the loss on that plane. Directions are not "
        "filter-normalized, as in the paper."
    )
    table = pd.DataFrame({"epoch": res.epochs, "pc1": p.coords[:, 0], "pc2": p.coords[:, 1]})
    st.download_button("Path (.csv)", table.to_csv(index=False), "trajectory.csv", key=f"{key}.csv")


def curvature_tab(key: str = "land.hess") -> None:
    reopen(
        f"{key}.job",
        "landscape_hessian",
        lambda c: {
            **set_picker(f"{key}.model", c.model, current=True),
            f"{key}.k": c.k,
            f"{key}.iters": c.iters,
            f"{key}.restarts": c.restarts,
            f"{key}.n": c.data.n_examples,
            f"{key}.params": c.params,
        },
    )
    reopen(
        f"{key}.map.job",
        "landscape_convexity",
        lambda c: {
            **set_picker(f"{key}.model", c.model, current=True),
            f"{key}.iters": c.iters,
            f"{key}.n": c.data.n_examples,
            f"{key}.map.res": c.resolution,
            f"{key}.map.span": c.hi,
            f"{key}.map.seed": c.directions.seed,
        },
    )
    lm = pick_model(f"{key}.model", "Model", epoch_param=param(key, "epoch"), current=True)
    if lm is None:
        return
    c = st.columns(5)
    k = _number(key, "k", c[0], "Eigenvalues", 1, 10, 3)
    iters = _number(
        key,
        "iters",
        c[1],
        "Lanczos restarts (at most)",
        5,
        500,
        50,
        help="ARPACK's restarts of the Lanczos process; each costs about 20 Hessian-vector products. A "
        "search that runs out says so.",
    )
    restarts = _number(key, "restarts", c[2], "Random starts", 1, 10, 3)
    n = _number(key, "n", c[3], "Training examples", 10, 10000, 500, step=100)
    params = bound(
        param(key, "params"),
        f"{key}.params",
        one_of(["all", "weights"]),
        lambda: c[4].radio(
            "Parameters",
            ["all", "weights"],
            key=f"{key}.params",
            format_func={"all": "all", "weights": "2+-dim tensors"}.get,
            help="The official code takes the Hessian over weight tensors of 2 or more dimensions only (no biases, no "
            "BatchNorm scales); 'all' takes every parameter.",
        ),
        "all",
    )
    if st.button("Compute eigenvalues", type="primary", key=f"{key}.run"):
        cfg = HessianConfig(
            model=ref(lm),
            k=int(k),
            iters=int(iters),
            restarts=int(restarts),
            params=params,
            data=EvalSet(split="train", n_examples=int(n)),
        )
        submit(f"{key}.job", job("landscape_hessian", cfg, (ref(lm),), f"Hessian eigenvalues of {lm.name}"))
    job_panel(f"{key}.job", lambda results: _show_hessian(results[0], key))
    st.markdown(
        "**Convexity map** (Li et al.'s Figure 7): |λ_min| / λ_max of the Hessian at each point of a "
        "filter-normalized random plane; near 0 the surface is locally convex, large values mean strong "
        "negative curvature. Each point costs two Lanczos searches (λ_max and λ_min)."
    )
    c = st.columns(3)
    res = _number(key, "map.res", c[0], "Points per axis", 2, 21, 5)
    span = _number(key, "map.span", c[1], "Half-width of the plane", 0.1, 5.0, 1.0, step=0.1)
    seed = _number(key, "map.seed", c[2], "Directions' seed", 0, 1_000_000, 123)
    if st.button("Compute the convexity map", key=f"{key}.map.run"):
        cfg = ConvexityConfig(
            model=ref(lm),
            directions=DirectionConfig(seed=int(seed)),
            lo=-float(span),
            hi=float(span),
            resolution=int(res),
            iters=int(iters),
            data=EvalSet(split="train", n_examples=int(n)),
        )
        submit(f"{key}.map.job", job("landscape_convexity", cfg, (ref(lm),), f"convexity map of {lm.name}"))
    job_panel(f"{key}.map.job", lambda results: _show_convexity(results[0], key))


def _show_convexity(res, key: str) -> None:
    top = float(np.nanmax(res.ratio)) if np.isfinite(res.ratio).any() else 1.0
    fig = heatmap(res.xs, res.ys, res.ratio, zrange=(0.0, top or 1.0), title="|λ_min| / λ_max", colorbar="ratio")
    st.plotly_chart(fig, config=CONFIG, key=f"{key}.map.fig", width="content")
    st.caption(
        f"At the model: λ_max = {res.lambda_max[len(res.ys) // 2, len(res.xs) // 2]:.4g}, "
        f"λ_min = {res.lambda_min[len(res.ys) // 2, len(res.xs) // 2]:.4g}."
    )
    blank = int(np.isnan(res.lambda_max).sum() + np.isnan(res.lambda_min).sum())
    if blank:
        st.warning(
            f"{blank} of {2 * res.lambda_max.size} eigenvalue searches did not converge: their points are "
            "blank. Raise the Lanczos restarts to fill them."
        )
    table = pd.DataFrame(
        [
            {
                "x": x,
                "y": y,
                "lambda_min": res.lambda_min[i, j],
                "lambda_max": res.lambda_max[i, j],
                "ratio": res.ratio[i, j],
            }
            for i, y in enumerate(res.ys)
            for j, x in enumerate(res.xs)
        ]
    )
    st.download_button("Convexity map (.csv)", table.to_csv(index=False), "convexity.csv", key=f"{key}.map.csv")


def _show_density(density, key: str) -> None:
    fig, sigma = density_figure(density)
    st.plotly_chart(fig, config=CONFIG, key=f"{key}.density")
    st.caption(
        f"The eigenvalue density (stochastic Lanczos quadrature, {density.nodes.shape[1]} steps, each Ritz value "
        f"a Gaussian of width {sigma:.2g}), log scale as PyHessian draws it: most of the spectrum sits near 0, "
        "a few outliers carry the large curvature."
    )


def _show_hessian(res, key: str) -> None:
    k = res.values.shape[1]
    st.plotly_chart(eigenvalue_figure(res.values), config=CONFIG, key=f"{key}.fig")
    spread = np.nanmax(res.values, 0) - np.nanmin(res.values, 0)
    st.caption(
        "The eigenvalues of largest magnitude of the training loss's Hessian (evaluated in eval mode), by "
        "Lanczos on Hessian-vector products (ARPACK, as the official code), from seeded random starts "
        "whose spread shows convergence: "
        + ", ".join(f"λ{i + 1} = {np.nanmean(res.values[:, i]):.4g} ± {spread[i] / 2:.2g}" for i in range(k))
        + f". {int(res.iterations[0, 0]):,} Hessian-vector products per start."
    )
    if res.trace is not None:
        st.caption(
            f"Trace of the Hessian (Hutchinson, {len(res.trace.samples)} Rademacher draws): "
            f"{res.trace.estimate:.4g} ± {res.trace.std_error:.2g}."
        )
    if res.density is not None:
        _show_density(res.density, key)
    if len(res.converged) and not res.converged.all():
        st.warning(
            f"{int((~res.converged).sum())} of {len(res.converged)} starts did not converge (largest relative "
            f"residual ‖Hv − λv‖/|λ| {np.nanmax(res.residuals):.1e}): raise the Lanczos restarts before "
            "trusting these values."
        )
    st.download_button(
        "Eigenvalues (.csv)",
        pd.DataFrame(res.values, columns=[f"lambda{i + 1}" for i in range(k)]).to_csv(index_label="start"),
        "hessian.csv",
        key=f"{key}.csv",
    )
