"""Level-set page pieces: source and targets, the traversal's settings, and its results, for one
model or two side by side (a standard and an adversarially trained one)."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from lenscape.analysis.level_sets import LSTConfig
from lenscape.backend.jobs import job, ref
from lenscape.backend.level_set_tasks import TraversalConfig
from lenscape.models.zoo import LoadedModel
from lenscape.ui.common import (
    MODEL_KEY,
    cached_data,
    eligible_runs,
    from_url,
    model_options,
    model_select,
    plain,
    plot_text,
    run_safely,
    to_url,
)
from lenscape.ui.figures import CONFIG, image_grid, montage_png
from lenscape.ui.level_sets_figs import PALETTE, curves, triangle_figure
from lenscape.ui.jobs import job_panel, predictions, reopen, submit
from lenscape.ui.url_widgets import coded, number_in, one_of, url_widget

TEACHING = """
- **An equi-confidence level set** is every input the model gives (about) the same confidence in a class:
  here, every image whose confidence in the source's class stays within δ of the clean source's.
- **Level Set Traversal** walks from the source toward an image of *another* class, taking at each step only
  the part of the way that is orthogonal to the gradient of the source class's loss (so, to first order, the
  confidence does not move), plus a small bounded push that raises the confidence back. A step that would
  drop the confidence by δ or more is refused. What comes out looks like the target but is still classified,
  with the same confidence, as the source class: a blind spot.
- **Star and triangle**: the straight lines from the source to each output stay high-confidence too (a
  star-shaped region), and so can much of the triangle spanned by the source and two outputs. The paper
  finds the high-confidence share of the triangle larger still for adversarially trained models, whose
  outputs stay further from their targets.
- **How to read the curves**: confidence should stay between the two dotted lines; the distance falls as
  the walk nears the target (the bound (1 − η)^T is what it would reach if every step were accepted and
  the gradient never got in the way); SSIM rises toward 1; the share of accepted steps shows how often the
  level set's curvature refused a step.
"""

PRESETS = {
    "argparse defaults (η 0.05, T 100, δ 0.05)": LSTConfig(),
    "the paper's ImageNet run (η 0.01, T 400, δ 0.2)": LSTConfig(eta=0.01, steps=400, delta=0.2, eps_adv=2e-3),
}
TARGET_MODES = ("by class", "at random")
SETTING_PARAMS = {"eta": "eta", "T": "T", "delta": "delta", "eps": "eps", "jitter": "jit"}  # {param: widget}
DELTA_HELP = "Share of the triangle's 66 points whose confidence is above p_src − Δ (strictly: for Δ = 0, above the source's own)."


def level_sets(key: str = "lst") -> None:
    """The model, then the traversal; a reopened result (Runs page) sets every widget first."""
    reopen(f"{key}.job", "level_set_traversal", lambda c: traversal_widgets(c, key))
    lm = model_select(
        f"{key}.model", empty="No models yet: train one on the **Models** page (the digits CNN takes seconds)."
    )
    if lm is not None:
        traversal(lm, key)


def traversal_widgets(c: TraversalConfig, key: str) -> dict:
    """The widget values that build TraversalConfig `c` again. Its images are picked once the
    model's predictions are in (pick_pair), as a link's ?source=&targets= are."""
    rec, lst = model_options()[c.model.run_id], c.lst
    preset = next(
        (
            name
            for name, p in PRESETS.items()
            if (p.eta, p.steps, p.delta, p.eps_adv, p.jitter)
            == (lst.eta, lst.steps, lst.delta, lst.eps_adv, lst.jitter)
        ),
        next(iter(PRESETS)),
    )
    frames = next((f for f in range(1, 17) if _log_every(lst.steps, f) == lst.log_every), 5)
    return {
        MODEL_KEY: c.model.run_id,
        f"{key}.model": c.model.run_id,
        f"{key}.compare": False,
        f"{key}.preset": preset,
        f"{key}.eta.{preset}": lst.eta,
        f"{key}.T.{preset}": lst.steps,
        f"{key}.delta.{preset}": lst.delta,
        f"{key}.eps.{preset}": _times_255(lst.eps_adv),
        f"{key}.jit.{preset}": _times_255(lst.jitter),
        f"{key}.seed": lst.seed,
        f"{key}.frames": frames,
        f"{key}.reopened": (c.source, c.targets),
        f"{key}.shown": [(rec["name"], tuple(rec.get("classes", ())))],
    }


def _times_255(value: float) -> float:
    """A pixel value in 1/255 units that the form divides back to exactly `value` (the job's key
    depends on every bit)."""
    import math

    guess = value * 255
    near = [guess, math.nextafter(guess, math.inf), math.nextafter(guess, -math.inf)]
    return next((v for v in near if v / 255 == value), guess)


def _log_every(steps: int, frames: int) -> int:
    return max(1, -(-steps // (frames + 1)))


def traversal(lm: LoadedModel, key: str = "lst") -> None:
    models = [lm]
    # a link names the second model (?compare=<run id>)
    if from_url(
        "compare", f"{key}.model_b", one_of([r for r in eligible_runs(data=lm.record.get("data")) if r != lm.run_id])
    ):
        st.session_state[f"{key}.compare"] = True
    if st.toggle(
        "Compare with a second model",
        key=f"{key}.compare",
        help="Run the same source and targets through a second model of the same data set, e.g. one "
        "trained with PGD (Models page, adversarial training), and see both side by side.",
    ):
        b = model_select(
            f"{key}.model_b",
            "Second model",
            current=False,
            like=lm,
            data=lm.record.get("data"),
            empty="No second model of this data set yet: train one on the **Models** page.",
        )
        if b is not None and b.run_id == lm.run_id:
            st.warning("Pick a model other than the first one to compare.")
        elif b is not None:
            models.append(b)
    to_url("compare", f"{key}.model_b", models[1].run_id if len(models) > 1 else None)
    pair = pick_pair(models, key)
    cfg = settings(key)
    if pair is None or cfg is None:
        st.info("Choose a source and at least one target.")
        return
    source, targets = pair
    if st.button("Run level set traversal", type="primary", key=f"{key}.run"):
        jobs = []
        for m in models:
            r = ref(m)
            jobs.append(
                job(
                    "level_set_traversal",
                    TraversalConfig(model=r, source=source, targets=targets, lst=cfg, data=lm.data.key()),
                    (r,),
                    f"level set traversal of {m.name} from #{source}",
                )
            )
        st.session_state[f"{key}.shown"] = [(m.name, m.classes) for m in models]
        submit(f"{key}.job", jobs)
    job_panel(f"{key}.job", lambda res: show_all(res, st.session_state.get(f"{key}.shown", []), key))


def pick_pair(models: list[LoadedModel], key: str) -> tuple[int, tuple[int, ...]] | None:
    """A source every model classifies correctly (by class, then which one) and targets of other
    classes, picked by class or at random. Shows them with p0 under each model."""
    probs = [predictions(m, f"{key}.pred{i}") for i, m in enumerate(models)]
    if any(p is None for p in probs):
        return None
    lm = models[0]
    test = cached_data(lm.data, "test")
    labels = test.labels.numpy()
    correct = np.all([p.argmax(1) == labels for p in probs], axis=0)
    sure = correct & np.all([p[np.arange(len(labels)), labels] > 0.6 for p in probs], axis=0)
    classes = list(range(len(lm.classes)))
    name = lm.classes.__getitem__
    both = " by both models" if len(models) > 1 else ""

    def target_pool(k: int) -> np.ndarray:
        strict = np.flatnonzero(sure & (labels == k))
        return strict if len(strict) else np.flatnonzero(correct & (labels == k))

    _images_from_url(key, labels, correct, target_pool)
    c = st.columns([1, 1, 2])
    if f"{key}.cls" not in st.session_state:  # by default the first class the model gets an image right of
        st.session_state[f"{key}.cls"] = next(
            (k for k in classes if (correct & (labels == k)).any()), classes[0] if len(classes) else None
        )
    src_class = c[0].selectbox("Source class", classes, key=f"{key}.cls", format_func=name)
    pool = np.flatnonzero(correct & (labels == src_class))
    if not len(pool):
        st.warning(f"No test image of class {plain(name(src_class))} is classified correctly{both}.")
        return None
    which = c[1].number_input(
        f"Which one (of {len(pool)})",
        1,
        len(pool),
        1,
        key=f"{key}.which.{src_class}",
        help=f"Correctly classified{both} test images of this class, in test-set order; the gallery below shows them.",
    )
    source = int(pool[which - 1])
    others = [k for k in classes if k != src_class]
    mode = url_widget(
        "pick",
        f"{key}.mode",
        lambda: c[2].radio(
            "Targets",
            TARGET_MODES,
            horizontal=True,
            key=f"{key}.mode",
            help="Targets are test images of other classes that every model classifies correctly with p > 0.6, as in "
            "the paper (correctly classified ones where a class has none).",
        ),
        TARGET_MODES[0],
        *coded(dict(zip(("class", "random"), TARGET_MODES))),
    )

    if mode == "by class":
        chosen = c[2].multiselect(
            "Target classes", others, others[:3], key=f"{key}.targets.{src_class}", format_func=name
        )
        targets = []
        if chosen:
            tc = st.columns(min(len(chosen), 9))
            for j, k in enumerate(chosen):
                tp = target_pool(k)
                if len(tp):
                    w = tc[j % len(tc)].number_input(
                        f"Which {plain(name(k))} (of {len(tp)})", 1, len(tp), 1, key=f"{key}.tw.{k}"
                    )
                    targets.append(int(tp[w - 1]))
    else:
        r = c[2].columns(2)
        n = url_widget(
            "n",
            f"{key}.nrand",
            lambda: r[0].slider("How many", 1, len(others), min(3, len(others)), key=f"{key}.nrand"),
            min(3, len(others)),
            number_in(1, len(others)),
        )
        seed = url_widget(
            "draw",
            f"{key}.rseed",
            lambda: r[1].number_input(
                "Draw", 0, 1_000_000, 0, key=f"{key}.rseed", help="Change to draw other targets."
            ),
            0,
            number_in(0, 1_000_000),
        )
        rng = np.random.default_rng([int(seed), source])
        targets = []
        for k in rng.permutation([k for k in others if len(target_pool(k))])[:n]:
            tp = target_pool(int(k))
            targets.append(int(tp[rng.integers(len(tp))]))
    targets = tuple(targets)
    to_url("source", f"{key}.source", source)  # a reload or a shared link reopens the same images
    # drawn targets follow from the draw's settings in the link; chosen ones are named
    to_url("targets", f"{key}.targets", ",".join(map(str, targets)) if mode == TARGET_MODES[0] and targets else None)
    for param, widget in (("n", "nrand"), ("draw", "rseed")) if mode == TARGET_MODES[0] else ():
        to_url(param, f"{key}.{widget}", None)

    with st.expander(f"Gallery: correctly classified {plain(name(src_class))} images"):
        shown = pool[:32]
        st.plotly_chart(
            image_grid(
                test.x(shown.tolist()).numpy(),
                [f"{i + 1} · #{t}" for i, t in enumerate(shown)],
                cols=16,
                height_per_row=90,
            ),
            config=CONFIG,
            key=f"{key}.gallery.{src_class}",
            width="content",
        )
        st.caption("The number before the dot is the one to type in **Which one**; # is the test-set index.")
    imgs = test.x([source, *targets]).numpy()
    p0 = [float(p[source, src_class]) for p in probs]
    titles = [f"source #{source} · {name(src_class)}"] + [f"target #{t} · {name(int(labels[t]))}" for t in targets]
    st.plotly_chart(
        image_grid(imgs, titles, cols=min(len(imgs), 10), height_per_row=170),
        config=CONFIG,
        key=f"{key}.pair",
        width="content",
    )
    st.caption(
        "The source's confidence in its class: "
        + "; ".join(f"p0 = {p:.3f}" + (f" ({plain(m.name)})" if len(models) > 1 else "") for p, m in zip(p0, models))
        + ". The walk keeps p(c) above p0 − δ."
    )
    return (source, targets) if targets else None


def _images_from_url(key: str, labels: np.ndarray, correct: np.ndarray, target_pool) -> None:
    """A link's ?source=i&targets=j,k (test-set indices), or a reopened result's, picks those images
    in the widgets, once; an index the widgets cannot show (out of range, or misclassified) is
    reported and ignored."""
    picks = {}
    for param in ("source", "targets"):
        value = st.query_params.get(param)
        if value is not None and st.session_state.get(f"_url.{key}.{param}") != value:
            st.session_state[f"_url.{key}.{param}"] = picks[param] = value
    if (reopened := st.session_state.pop(f"{key}.reopened", None)) is not None:
        picks = {"source": str(reopened[0]), "targets": ",".join(map(str, reopened[1]))}
    for param, value in picks.items():
        try:
            idx = [int(v) for v in value.split(",") if v.strip()]
            if param == "source":
                (i,) = idx
                cls = int(labels[i])
                pool = np.flatnonzero(correct & (labels == cls))
                if i not in pool:
                    raise ValueError("not classified correctly")
                st.session_state[f"{key}.cls"] = cls
                st.session_state[f"{key}.which.{cls}"] = int(np.searchsorted(pool, i)) + 1
            else:
                src = st.session_state.get(f"{key}.cls", 0)
                chosen = []
                for i in idx:
                    k = int(labels[i])
                    pool = target_pool(k)
                    if i not in pool or k == src or k in chosen:
                        raise ValueError(f"#{i} cannot be a target here")
                    chosen.append(k)
                    st.session_state[f"{key}.tw.{k}"] = int(np.searchsorted(pool, i)) + 1
                st.session_state[f"{key}.mode"] = "by class"
                st.session_state[f"{key}.targets.{src}"] = chosen
        except (ValueError, IndexError) as exc:
            st.warning(
                f"The link's {param}={plain(repr(value))} does not name images this view can use ({plain(exc)}); "
                "ignored."
            )


def settings(key: str) -> LSTConfig | None:
    """The traversal's settings, each in the address bar where it differs from the preset's."""
    with st.expander("Traversal settings", expanded=False):
        preset = url_widget(
            "preset",
            f"{key}.preset",
            lambda: st.radio("Start from", list(PRESETS), key=f"{key}.preset", horizontal=True),
            next(iter(PRESETS)),
            *coded(dict(zip(("argparse", "paper"), PRESETS))),
        )
        if st.session_state.get(f"_{key}.preset_was", preset) != preset:  # another preset: its own values
            for param, widget in SETTING_PARAMS.items():
                to_url(param, f"{key}.{widget}.{preset}", None)
        st.session_state[f"_{key}.preset_was"] = preset
        base = PRESETS[preset]
        c = st.columns(7)
        eta = url_widget(
            "eta",
            f"{key}.eta.{preset}",
            lambda: c[0].number_input(
                "η (step)",
                1e-4,
                1.0,
                base.eta,
                format="%.4f",
                key=f"{key}.eta.{preset}",
                help="Share of the (projected) way to the target taken per step.",
            ),
            base.eta,
            number_in(1e-4, 1, float),
        )
        steps = url_widget(
            "T",
            f"{key}.T.{preset}",
            lambda: c[1].number_input(
                "T (steps)",
                1,
                2000,
                base.steps,
                key=f"{key}.T.{preset}",
                help="Exactly this many iterations: the paper's code has no stopping rule.",
            ),
            base.steps,
            number_in(1, 2000),
        )
        delta = url_widget(
            "delta",
            f"{key}.delta.{preset}",
            lambda: c[2].number_input(
                "δ",
                0.001,
                1.0,
                base.delta,
                format="%.3f",
                key=f"{key}.delta.{preset}",
                help="A step is accepted only while p0 − p(c) < δ.",
            ),
            base.delta,
            number_in(0.001, 1, float),
        )
        eps = url_widget(
            "eps",
            f"{key}.eps.{preset}",
            lambda: c[3].number_input(
                "ε_adv (×1/255)",
                0.0,
                50.0,
                base.eps_adv * 255,
                key=f"{key}.eps.{preset}",
                help="Bound of the cumulative confidence-raising term, per pixel.",
            ),
            base.eps_adv * 255,
            number_in(0, 50, float),
        )
        jitter = url_widget(
            "jitter",
            f"{key}.jit.{preset}",
            lambda: c[4].number_input(
                "Jitter (×1/255)",
                0.0,
                50.0,
                base.jitter * 255,
                key=f"{key}.jit.{preset}",
                help="Total width of the uniform noise added to the source at the start.",
            ),
            base.jitter * 255,
            number_in(0, 50, float),
        )
        seed = url_widget(
            "seed",
            f"{key}.seed",
            lambda: c[5].number_input("Seed", 0, 1_000_000, 0, key=f"{key}.seed", help="Seed of the initial jitter."),
            0,
            number_in(0, 1_000_000),
        )
        frames = url_widget(
            "frames",
            f"{key}.frames",
            lambda: c[6].number_input(
                "Path frames",
                1,
                16,
                5,
                key=f"{key}.frames",
                help="Intermediate iterates kept for the filmstrip, evenly spaced over the T steps.",
            ),
            5,
            number_in(1, 16),
        )
    return run_safely(
        lambda: LSTConfig(
            eta=float(eta),
            steps=int(steps),
            delta=float(delta),
            eps_adv=float(eps) / 255,
            jitter=float(jitter) / 255,
            seed=int(seed),
            log_every=_log_every(int(steps), int(frames)),
        ),
        "Traversal settings",
    )


def summary(res) -> dict:
    """The figures a comparison needs, over the pairs of one result."""
    lst = res.lst
    row = {
        "final / initial distance (median)": float(np.median(lst.dist_l2[-1] / lst.dist_l2[0])),
        "SSIM to the target (median)": float(np.median(lst.ssim[-1])),
        "outputs in the source class": float(np.mean(lst.predictions == res.label)),
        "accepted steps": float(lst.accepted.mean()),
    }
    if res.triangles:
        row["triangle mean p(c)"] = float(np.mean([t.mean for t in res.triangles]))
        for d in res.triangles[0].fraction_above:
            row[f"share p > p_src − {d:g}"] = float(np.mean([t.fraction_above[d] for t in res.triangles]))
        row["edge mean"] = float(np.nanmean([t.edge_mean for t in res.triangles]))
        row["edge min (p − p_src)"] = float(np.min([t.edge_min for t in res.triangles]))
    return row


def show_all(results: list, shown: list[tuple[str, tuple]], key: str) -> None:
    if len(shown) != len(results):
        shown = [(f"model {i + 1}", None) for i in range(len(results))]
    if len(results) == 1:
        show(shown[0][0], shown[0][1], results[0], key)
        return
    st.subheader("Side by side")
    rows = pd.DataFrame([{"model": n, **summary(r)} for (n, _), r in zip(shown, results)])
    shares = [c for c in rows.columns if c.startswith("share")]
    if shares:
        bar = go.Figure(
            [
                go.Bar(name=plot_text(n), x=[c.replace("share p > ", "") for c in shares], y=rows.loc[i, shares])
                for i, (n, _) in enumerate(shown)
            ]
        )
        bar.update_layout(
            barmode="group",
            height=280,
            margin=dict(l=0, r=0, t=30, b=0),
            yaxis=dict(range=[0, 1]),
            title="High-confidence share of the triangles",
            legend=dict(orientation="h", y=-0.2),
        )
        st.plotly_chart(bar, config=CONFIG, key=f"{key}.cmp")
    st.dataframe(
        rows,
        hide_index=True,
        column_config={c: st.column_config.NumberColumn(help=DELTA_HELP, format="%.2f") for c in shares},
    )
    st.download_button("Comparison (.csv)", rows.to_csv(index=False), "level_sets_comparison.csv", key=f"{key}.cmpcsv")
    cols = st.columns(len(results))
    for i, ((name, classes), res) in enumerate(zip(shown, results)):
        with cols[i]:
            st.markdown(f"#### {plain(name)}")
            show(name, classes, res, f"{key}.m{i}", compact=True)


def show(name: str, classes, res, key: str, compact: bool = False) -> None:
    lst, k, c = res.lst, len(res.targets), res.label
    cls = (lambda i: classes[int(i)]) if classes else str
    st.markdown(
        f"**Outputs**: predicted {plain(', '.join(cls(p) for p in lst.predictions))} (the source class is "
        f"{plain(cls(c))}); final distance to the target / initial: "
        + ", ".join(f"{r:.2f}" for r in lst.dist_l2[-1] / lst.dist_l2[0])
        + "; SSIM to the target: "
        + ", ".join(f"{s:.2f}" for s in lst.ssim[-1])
    )
    inner = list(range(1, len(lst.snapshot_steps) - 1))
    if compact and len(inner) > 3:
        inner = [inner[len(inner) // 4], inner[len(inner) // 2], inner[3 * len(inner) // 4]]
    strips, strip_titles = [], []
    for i in range(k):
        frames = [
            res.source_image,
            *lst.snapshots[inner, i],
            lst.output[i],
            res.target_images[i],
            np.abs(lst.output[i] - res.target_images[i]),
        ]
        titles = (
            ["source"]
            + [f"step {lst.snapshot_steps[s]}" for s in inner]
            + [
                f"output {lst.confidence[-1, i]:.2f}",
                f"target {cls(res.target_labels[i])}",
                "|out − target|",
            ]
        )
        strips.append(np.clip(np.stack(frames), 0, 1))
        strip_titles.append(titles)
        st.plotly_chart(
            image_grid(strips[-1], titles, cols=len(frames), height_per_row=130 if not compact else 100),
            config=CONFIG,
            key=f"{key}.strip{i}",
            width="content",
        )
    st.caption(
        "Each row: the source, the path at logged steps, the output with its confidence in the source class, "
        "the target, and |output − target|."
    )
    st.plotly_chart(curves(res, compact), config=CONFIG, key=f"{key}.curves")
    st.caption(
        f"Dotted: p0 and p0 − δ (δ = {res.delta:g}); accepted iterates stay above the lower line. "
        "Distance: RMS (solid) and ℓ∞ (dotted)."
    )
    flat = getattr(lst, "no_gradient", None)
    if flat is not None and flat.size and flat.any():
        st.warning(
            f"{int(flat.sum())} of {flat.size} steps had no usable gradient (the model is saturated there: "
            "its confidence is 1 to float precision): those steps moved straight toward the target, with "
            "nothing keeping the confidence."
        )
    star = go.Figure(
        [
            go.Scatter(
                x=np.linspace(0, 1, res.star.shape[1]),
                y=res.star[i],
                name=f"→ #{res.targets[i]}",
                line=dict(color=PALETTE[i % len(PALETTE)]),
            )
            for i in range(k)
        ]
    )
    star.update_layout(
        height=300,
        margin=dict(l=0, r=0, t=30, b=0),
        yaxis=dict(range=[0, 1.02], title="p(c)"),
        xaxis_title="from the source (0) to the output (1)",
        title="Star: straight lines to the outputs",
    )
    cols = [st, st] if compact else st.columns(2)
    cols[0].plotly_chart(star, config=CONFIG, key=f"{key}.star")
    rows = []
    pairs = getattr(res, "triangle_pairs", None) or [(j, j + 1) for j in range(len(res.triangles))]
    for j, (tri, (a, b)) in enumerate(zip(res.triangles, pairs)):
        if j < 3:  # the first few drawn; every one is in the table
            (cols[1] if j == 0 else st).plotly_chart(triangle_figure(tri, (a, b)), config=CONFIG, key=f"{key}.tri{j}")
        rows.append(
            {
                "triangle": f"outputs {a + 1}, {b + 1}",
                "p_src": tri.p_source,
                "mean": tri.mean,
                **{f"share p > p_src − {d:g}": v for d, v in tri.fraction_above.items()},
                "edge mean": tri.edge_mean,
                "edge min (p − p_src)": tri.edge_min,
            }
        )
    if rows:
        table = pd.DataFrame(rows)
        st.dataframe(
            table,
            hide_index=True,
            column_config={
                c: st.column_config.NumberColumn(help=DELTA_HELP, format="%.2f") for c in table if c.startswith("share")
            },
        )
        st.caption(
            f"{len(rows)} triangles, one per pair of outputs (the paper's table averages all pairs; the edge "
            "minimum takes the lowest). Each has the grid's 66 points: the official code's test "
            "1 − t₁ − t₂ < 0 drops (0.8, 0.2) and (0.9, 0.1) to floating point and keeps 64; Lenscape "
            "keeps all 66. Edge mean: p over the two source → output edges."
        )
    e = st.columns(3)
    if rows:
        e[0].download_button("Triangle metrics (.csv)", table.to_csv(index=False), "triangles.csv", key=f"{key}.csv")
    buf = io.BytesIO()
    np.savez(
        buf,
        source=res.source_image,
        targets=res.target_images,
        outputs=lst.output,
        p0=lst.p0,
        confidence=lst.confidence,
        accepted=lst.accepted,
        dist_l2=lst.dist_l2,
        dist_linf=lst.dist_linf,
        ssim=lst.ssim,
        snapshots=lst.snapshots,
        snapshot_steps=lst.snapshot_steps,
        star=res.star,
    )
    e[1].download_button("Path and metrics (.npz)", buf.getvalue(), "level_set_traversal.npz", key=f"{key}.npz")
    e[2].download_button(
        "Path images (.png)",
        montage_png(strips, strip_titles),
        "level_set_traversal.png",
        mime="image/png",
        key=f"{key}.png",
    )
