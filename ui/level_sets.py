"""Level-set page pieces: source and targets, the traversal's settings, and its results."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from analysis.level_sets import LSTConfig
from backend.jobs import job, ref
from backend.level_set_tasks import TraversalConfig
from models.zoo import LoadedModel
from ui.common import cached_data, run_safely
from ui.figures import CONFIG, image_grid
from ui.jobs import job_panel, submit, test_predictions

TEACHING = """
- **An equi-confidence level set** is every input the model gives (about) the same confidence in a class:
  here, every image whose confidence in the source's class stays within δ of the clean source's.
- **Level Set Traversal** walks from the source toward an image of *another* class, taking at each step only
  the part of the way that is orthogonal to the gradient of the source class's loss (so, to first order, the
  confidence does not move), plus a small bounded push that raises the confidence back. A step that would
  drop the confidence by δ or more is refused. What comes out looks like the target but is still classified,
  with the same confidence, as the source class: a blind spot.
- **Star and triangle**: the straight lines from the source to each output stay high-confidence too (a
  star-shaped region), and so can the whole triangle spanned by the source and two outputs. Adversarially
  trained models have much smaller such regions.
"""

PRESETS = {"argparse defaults (η 0.05, T 100, δ 0.05)": LSTConfig(),
           "the paper's ImageNet run (η 0.01, T 400, δ 0.2)": LSTConfig(eta=0.01, steps=400, delta=0.2, eps_adv=2e-3)}


def pick_pair(lm: LoadedModel, key: str) -> tuple[int, tuple[int, ...]] | None:
    """A correctly classified source (by class and index) and targets of other classes."""
    probs = test_predictions(lm, f"{key}.pred")
    if probs is None:
        return None
    test = cached_data(lm.data, "test")
    labels = test.labels.numpy()
    correct = probs.argmax(1) == labels
    classes = list(range(len(lm.classes)))
    c = st.columns([1, 1, 2])
    src_class = c[0].selectbox("Source class", classes, key=f"{key}.cls", format_func=lambda i: lm.classes[i])
    pool = np.flatnonzero(correct & (labels == src_class))
    if not len(pool):
        st.warning(f"No correctly classified test image of class {lm.classes[src_class]}.")
        return None
    which = c[1].number_input(f"Which one (of {len(pool)})", 1, len(pool), 1, key=f"{key}.which.{src_class}")
    source = int(pool[which - 1])
    others = [k for k in classes if k != src_class]
    chosen = c[2].multiselect("Target classes", others, others[:3], key=f"{key}.targets.{src_class}",
                              format_func=lambda i: lm.classes[i],
                              help="The first correctly classified test image of each class is its target.")
    targets = tuple(int(np.flatnonzero(correct & (labels == k))[0]) for k in chosen
                    if (correct & (labels == k)).any())
    p0 = float(probs[source, src_class])
    imgs = test.x([source, *targets]).numpy()
    titles = [f"source #{source} · {lm.classes[src_class]} {p0:.0%}"] + \
             [f"target #{t} · {lm.classes[int(labels[t])]}" for t in targets]
    st.plotly_chart(image_grid(imgs, titles, cols=min(len(imgs), 8), height_per_row=170), config=CONFIG,
                    key=f"{key}.pair")
    st.caption(f"The source's confidence in its class: p0 = {p0:.3f}. The walk keeps p(c) above p0 − δ.")
    return (source, targets) if targets else None


def settings(key: str) -> LSTConfig | None:
    with st.expander("Traversal settings", expanded=False):
        name = st.radio("Start from", list(PRESETS), key=f"{key}.preset", horizontal=True)
        base = PRESETS[name]
        c = st.columns(6)
        eta = c[0].number_input("η (step)", 1e-4, 1.0, base.eta, format="%.4f", key=f"{key}.eta.{name}")
        steps = c[1].number_input("T (steps)", 1, 2000, base.steps, key=f"{key}.T.{name}")
        delta = c[2].number_input("δ", 0.001, 1.0, base.delta, format="%.3f", key=f"{key}.delta.{name}")
        eps = c[3].number_input("ε_adv (×1/255)", 0.0, 50.0, base.eps_adv * 255, key=f"{key}.eps.{name}")
        jitter = c[4].number_input("Jitter (×1/255)", 0.0, 50.0, base.jitter * 255, key=f"{key}.jit.{name}")
        seed = c[5].number_input("Seed", 0, 1_000_000, 0, key=f"{key}.seed")
    return run_safely(lambda: LSTConfig(eta=float(eta), steps=int(steps), delta=float(delta), eps_adv=float(eps) / 255,
                                        jitter=float(jitter) / 255, seed=int(seed),
                                        log_every=max(1, int(steps) // 8)), "Traversal settings")


def traversal(lm: LoadedModel, key: str = "lst") -> None:
    pair = pick_pair(lm, key)
    cfg = settings(key)
    if pair is None or cfg is None:
        st.info("Choose a source and at least one target class.")
        return
    source, targets = pair
    if st.button("Run level set traversal", type="primary", key=f"{key}.run"):
        r = ref(lm)
        submit(f"{key}.job", job("level_set_traversal", TraversalConfig(model=r, source=source, targets=targets, lst=cfg),
                                 (r,), f"level set traversal of {lm.name} from #{source}"))
    job_panel(f"{key}.job", lambda res: show(lm, res[0], key))


def show(lm: LoadedModel, res, key: str) -> None:
    lst, k = res.lst, len(res.targets)
    c = res.label
    st.markdown(f"**Outputs**: predicted {', '.join(lm.classes[int(p)] for p in lst.predictions)} "
                f"(the source class is {lm.classes[c]}); final distance to the target / initial: "
                + ", ".join(f"{r:.2f}" for r in lst.dist_l2[-1] / lst.dist_l2[0]))
    for i in range(k):
        frames = [res.source_image, *lst.snapshots[1:-1, i], lst.output[i], res.target_images[i],
                  np.abs(lst.output[i] - res.target_images[i])]
        titles = (["source"] + [f"step {s}" for s in lst.snapshot_steps[1:-1]] +
                  [f"output · p={lst.confidence[-1, i]:.2f}", f"target · {lm.classes[int(res.target_labels[i])]}",
                   "|output − target|"])
        st.plotly_chart(image_grid(np.clip(np.stack(frames), 0, 1), titles, cols=min(len(frames), 12),
                                   height_per_row=150), config=CONFIG, key=f"{key}.strip{i}")
    steps = np.arange(len(lst.confidence))
    fig = make_subplots(rows=1, cols=3, subplot_titles=("confidence in the source class", "distance to the target (RMS)",
                                                        "accepted steps (running share)"))
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
    for i in range(k):
        name, line = f"→ #{res.targets[i]}", dict(color=palette[i % len(palette)])
        fig.add_trace(go.Scatter(x=steps, y=lst.confidence[:, i], name=name, legendgroup=name, line=line), 1, 1)
        fig.add_trace(go.Scatter(x=steps, y=lst.dist_l2[:, i], name=name, legendgroup=name, showlegend=False,
                                 line=line), 1, 2)
        rate = np.cumsum(lst.accepted[:, i]) / np.arange(1, len(lst.accepted) + 1)
        fig.add_trace(go.Scatter(x=steps[1:], y=rate, name=name, legendgroup=name, showlegend=False, line=line), 1, 3)
    for y in (float(lst.p0[0]), float(lst.p0[0]) - res.delta):
        fig.add_hline(y=y, line=dict(dash="dot", color="#999"), row=1, col=1)
    fig.update_layout(height=340, margin=dict(l=0, r=0, t=40, b=0), legend=dict(orientation="h", y=-0.25))
    st.plotly_chart(fig, config=CONFIG, key=f"{key}.curves")
    st.caption(f"Dotted: the clean source's confidence p0 and p0 − δ (δ = {res.delta:g}); accepted iterates stay "
               "above the lower line.")
    star = go.Figure([go.Scatter(x=np.linspace(0, 1, res.star.shape[1]), y=res.star[i], name=f"→ #{res.targets[i]}",
                                 line=dict(color=palette[i % len(palette)])) for i in range(k)])
    star.update_layout(height=300, margin=dict(l=0, r=0, t=30, b=0), yaxis=dict(range=[0, 1.02], title="p(c)"),
                       xaxis_title="from the source (0) to the output (1)", title="Star: straight lines to the outputs")
    cols = st.columns(2)
    cols[0].plotly_chart(star, config=CONFIG, key=f"{key}.star")
    rows = []
    for j, tri in enumerate(res.triangles):
        tfig = go.Figure(go.Scatter(x=tri.xy[:, 0], y=tri.xy[:, 1], mode="markers",
                                    marker=dict(size=14, color=tri.confidence, cmin=0, cmax=1, colorscale="Viridis",
                                                colorbar=dict(title="p(c)")),
                                    text=[f"t₁={a:.1f} t₂={b:.1f}: {p:.2f}" for (a, b), p in zip(tri.weights, tri.confidence)],
                                    hoverinfo="text"))
        tfig.update_layout(height=300, margin=dict(l=0, r=0, t=30, b=0), title=f"Triangle: source, outputs {j + 1} and {j + 2}",
                           xaxis=dict(visible=False), yaxis=dict(visible=False, scaleanchor="x"))
        (cols[1] if j == 0 else st).plotly_chart(tfig, config=CONFIG, key=f"{key}.tri{j}")
        rows.append({"triangle": f"outputs {j + 1}, {j + 2}", "p_source": tri.p_source, "mean": tri.mean,
                     **{f"share p > p_src − {d}": v for d, v in tri.fraction_above.items()},
                     "edge min (p − p_src)": tri.edge_min})
    if rows:
        table = pd.DataFrame(rows)
        st.dataframe(table, hide_index=True)
        st.download_button("Triangle metrics (.csv)", table.to_csv(index=False), "triangles.csv", key=f"{key}.csv")
    buf = io.BytesIO()
    np.savez(buf, outputs=lst.output, confidence=lst.confidence, accepted=lst.accepted, dist_l2=lst.dist_l2,
             dist_linf=lst.dist_linf, snapshots=lst.snapshots, star=res.star)
    st.download_button("Path and metrics (.npz)", buf.getvalue(), "level_set_traversal.npz", key=f"{key}.npz")
