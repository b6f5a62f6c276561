"""Saliency page pieces: model choice, method form, image picker and the map grid."""

from __future__ import annotations

import html
import io

import numpy as np
import pandas as pd
import streamlit as st

from lenscape.analysis.saliency import (
    BASELINES,
    METHOD_LABELS,
    METHODS,
    SaliencyConfig,
    gradcam_layers,
    gradcam_map_sizes,
    suggest_gradcam_layer,
)
from lenscape.analysis.visualization import SIGNS
from lenscape.backend.jobs import job, ref
from lenscape.backend.saliency_tasks import GridConfig
from lenscape.models.data import stratified
from lenscape.models.zoo import LoadedModel
from lenscape.ui.common import (
    MODEL_KEY,
    backend,
    plot_text,
    cached_data,
    eligible_runs,
    model_select,
    plain,
    run_model,
    training_split,
)
from lenscape.ui.figures import CONFIG
from lenscape.ui.jobs import job_panel, predictions, reopen, submit
from lenscape.ui.saliency_figs import Display, attribution_grid, grid_file, model_facts, what_differs
from lenscape.ui.url_widgets import coded, comma, number_in, one_of, pair_in, some_of, url_widget

DEFAULT_METHODS = ("gradient", "integrated_gradients", "smoothgrad")
SIGN_LABELS = {"absolute_value": "Absolute", "positive": "Positive", "negative": "Negative", "all": "All"}
TARGETS = {"predicted": "predicted class", "true": "true class"}  # else "a chosen class"
PREDICTIONS, FLIPPED = ("all", "correct", "incorrect"), ("all", "relabelled", "memorized")
MODES, RANGES = ("blended", "heat map"), ("per map", "shared")


def pick_models(key: str, compare: bool = True) -> list[LoadedModel]:
    """The primary model (the workspace's current one by default) plus any to compare with it:
    only models with the same data set can share a grid."""
    primary = model_select(
        f"{key}.primary",
        empty="No models with a data set yet: train one on the **Models** page (a digits MLP takes seconds).",
    )
    if primary is None:
        return []
    if not compare:
        return [primary]
    same = {r: rec for r, rec in eligible_runs(data=primary.record["data"]).items() if r != primary.run_id}
    others = url_widget(
        "compare",
        f"{key}.others",
        lambda: st.multiselect(
            "Compare with (same data set)",
            list(same),
            key=f"{key}.others",
            format_func=lambda r: same[r]["name"],
            help="e.g. a standard and a PGD-trained copy of the same architecture",
        ),
        [],
        some_of(list(same)),
        comma,
    )
    return [primary, *[lm for r in others if (lm := run_model(same[r])) is not None]]


def model_widgets(run_id: str, key: str = "sal", others: list[str] | tuple = ()) -> dict:
    """pick_models' widget values for a reopened result: its model is the current one; `others`
    are the models it was compared with (a stored job holds one model's maps: none)."""
    return {MODEL_KEY: run_id, f"{key}.primary": run_id, f"{key}.others": list(others)}


def method_widgets(methods: tuple[SaliencyConfig, ...], key: str) -> dict:
    """method_form's widget values that build `methods` again (a reopened result)."""
    first, target = methods[0], methods[0].target
    values = {
        f"{key}.methods": [m.method for m in methods],
        f"{key}.target": TARGETS.get(target, "a chosen class") if isinstance(target, str) else "a chosen class",
        f"{key}.igb": first.baseline,
        f"{key}.igs": first.n_steps,
        f"{key}.sgn": first.noise_level,
        f"{key}.sgs": first.n_samples,
        f"{key}.ow": first.window,
        f"{key}.os": first.stride,
        f"{key}.batch": first.batch_size,
    }
    if not isinstance(target, str):
        values[f"{key}.cls"] = int(target)
    if layer := next((m.layer for m in methods if m.method == "gradcam"), None):
        values[f"{key}.layer"] = layer
    return values


HEAVY = 5e6 * 64 * 64  # parameters × input pixels past which a CPU takes minutes for IG and SmoothGrad


def heavy_on_this_machine(lm: LoadedModel) -> bool:
    """Whether the default methods would take minutes: a large model at a large input size, and no GPU."""
    import torch

    if torch.cuda.is_available():
        return False
    params = sum(p.numel() for p in lm.model.parameters())
    return params * lm.arch.in_shape[1] * lm.arch.in_shape[2] > HEAVY


def method_form(
    lm: LoadedModel,
    key: str,
    default: tuple[str, ...] = DEFAULT_METHODS,
    allow_target: bool = True,
    url: str | None = None,
) -> tuple[SaliencyConfig, ...]:
    """The methods and their settings; with `url` (a prefix of the parameters' names), every one of
    them lives in the address bar."""

    def linked(param, widget, draw, value, parse=str, text=str):
        return url_widget(None if url is None else url + param, f"{key}.{widget}", draw, value, parse, text)

    if default == DEFAULT_METHODS and heavy_on_this_machine(lm):
        default = ("gradient",)
        st.caption(
            "A model this size on a CPU: the grid starts with the gradient alone. Integrated Gradients costs "
            "about 50 passes per image and SmoothGrad 25 (a ResNet-50 grid of 6 images took 2 minutes here); "
            "add them below."
        )
    methods = linked(
        "methods",
        "methods",
        lambda: st.multiselect(
            "Methods",
            METHODS,
            None if f"{key}.methods" in st.session_state else list(default),
            key=f"{key}.methods",
            format_func=METHOD_LABELS.get,
        ),
        list(default),
        lambda v: [m for m in v.split(",") if m in METHODS],
        comma,
    )
    target = "predicted"
    if allow_target:
        c = st.columns([2, 1])
        choice = linked(
            "explain",
            "target",
            lambda: c[0].radio("Explain", [*TARGETS.values(), "a chosen class"], horizontal=True, key=f"{key}.target"),
            TARGETS["predicted"],
            *coded({**TARGETS, "class": "a chosen class"}),
        )
        target = {v: k for k, v in TARGETS.items()}.get(choice)
        if target is None:
            target = int(
                linked(
                    "class",
                    "cls",
                    lambda: c[1].selectbox(
                        "Class", range(len(lm.classes)), key=f"{key}.cls", format_func=lambda i: lm.classes[i]
                    ),
                    0,
                    one_of(range(len(lm.classes))),
                )
            )
    with st.expander("Method settings"):
        c = st.columns(4)
        ig_base = linked(
            "baseline",
            "igb",
            lambda: c[0].selectbox(
                "Baseline (IG and DeepLift)",
                BASELINES,
                key=f"{key}.igb",
                format_func={
                    "zeros": "black (zeros)",
                    "blurred": "blurred copy of the image",
                    "mean": "data-set mean colour",
                }.get,
                help="The reference image both methods attribute against: a map explains f(image) - f(baseline).",
            ),
            BASELINES[0],
            one_of(BASELINES),
        )
        steps = linked(
            "steps", "igs", lambda: c[0].number_input("IG steps", 4, 512, 50, key=f"{key}.igs"), 50, number_in(4, 512)
        )
        noise = linked(
            "noise",
            "sgn",
            lambda: c[1].number_input("SmoothGrad/VarGrad noise σ (pixels)", 0.0, 1.0, 0.15, key=f"{key}.sgn"),
            0.15,
            number_in(0, 1, float),
        )
        samples = linked(
            "samples",
            "sgs",
            lambda: c[1].number_input(
                "SmoothGrad/VarGrad samples",
                1,
                200,
                20,
                key=f"{key}.sgs",
                help="Each image's noise is fixed by the seed and its index, so maps do not change with the chunk "
                "size or the device.",
            ),
            20,
            number_in(1, 200),
        )
        window = linked(
            "window",
            "ow",
            lambda: c[2].number_input("Occlusion window (px)", 1, 64, 4, key=f"{key}.ow"),
            4,
            number_in(1, 64),
        )
        stride = linked(
            "stride",
            "os",
            lambda: c[2].number_input("Occlusion stride (px)", 1, 64, 2, key=f"{key}.os"),
            2,
            number_in(1, 64),
        )
        convs = gradcam_layers(lm.model)  # convolutions, and a vision transformer's token layers
        sizes = gradcam_map_sizes(lm.model, tuple(lm.arch.in_shape)) if convs else {}
        best = suggest_gradcam_layer(lm.model, tuple(lm.arch.in_shape)) if convs else None
        layer = (
            linked(
                "layer",
                "layer",
                lambda: c[3].selectbox(
                    "Grad-CAM layer",
                    convs,
                    convs.index(best),
                    key=f"{key}.layer",
                    format_func=lambda n: f"{n} ({'×'.join(map(str, sizes.get(n, ())))})",
                    help="The last convolutional layer whose output is at least 2×2 is suggested; in a vision "
                    "transformer, the first LayerNorm of its last block (its tokens read as a map of patches).",
                ),
                best,
                one_of(convs),
            )
            if convs
            else None
        )
        if layer is not None and min(sizes.get(layer, (2, 2))) < 2 and "gradcam" in methods:
            st.warning(
                f"Grad-CAM at {layer} gives a {'×'.join(map(str, sizes[layer]))} map: one value per image, "
                f"so its maps are blank. {best} ({'×'.join(map(str, sizes[best]))}) shows where."
            )
        batch = linked(
            "chunk",
            "batch",
            lambda: c[3].number_input(
                "Images per chunk", 1, 4096, 128, key=f"{key}.batch", help="Bounds memory; does not change the maps."
            ),
            128,
            number_in(1, 4096),
        )
    if "gradcam" in methods and layer is None:
        st.warning("Grad-CAM does not apply to this model: it has no convolutional layer (an MLP?). Skipped.")
        methods = [m for m in methods if m != "gradcam"]
    mean = tuple(cached_data(lm.data, "train").mean) if lm.data else ()
    return tuple(
        SaliencyConfig(
            method=m,
            target=target,
            layer=layer if m == "gradcam" else None,
            n_steps=int(steps),
            baseline=ig_base,
            baseline_mean=mean,
            noise_level=float(noise),
            n_samples=int(samples),
            window=int(window),
            stride=int(stride),
            batch_size=int(batch),
        )
        for m in methods
    )


def image_picker(lm: LoadedModel, key: str) -> tuple[str, tuple[int, ...]]:
    """(split, indices): test or training images by class, correctness, confidence, relabelling or
    explicit indices, paged. The address bar holds every choice (?split=train&idx=3,17&page=2...)."""
    split = url_widget(
        "split",
        f"{key}.split",
        lambda: st.radio(
            "Images from",
            ["test", "train"],
            horizontal=True,
            key=f"{key}.split",
            help="The training split is the set the model was trained on, with its true labels; where labels were "
            "flipped, each image also shows the label it was trained with.",
        ),
        "test",
        one_of(["test", "train"]),
    )
    probs = predictions(lm, f"{key}.pred_job.{split}", split)
    if probs is None:
        return split, ()
    if split == "train":
        ts = training_split(lm)
        labels, trained, relabelled = ts.data.labels.numpy(), ts.trained_labels, ts.relabelled
    else:
        labels = cached_data(lm.data, "test").labels.numpy()
        trained, relabelled = labels, np.zeros(len(labels), dtype=bool)
    pred, conf = probs.argmax(1), probs.max(1)
    c = st.columns([2, 1, 2, 1, 1])
    n = len(lm.classes)
    classes = url_widget(
        "classes",
        f"{key}.classes",
        lambda: c[0].multiselect(
            "Classes (true)", range(n), key=f"{key}.classes", format_func=lambda i: lm.classes[i], placeholder="all"
        ),
        [],
        some_of(range(n)),
        comma,
    )
    which = url_widget(
        "preds",
        f"{key}.which",
        lambda: c[1].selectbox("Predictions", PREDICTIONS, key=f"{key}.which"),
        "all",
        one_of(PREDICTIONS),
    )
    lo, hi = url_widget(
        "conf",
        f"{key}.conf",
        lambda: c[2].slider("Confidence", 0.0, 1.0, (0.0, 1.0), 0.01, key=f"{key}.conf"),
        (0.0, 1.0),
        pair_in(0, 1),
        comma,
    )
    per_page = url_widget(
        "per", f"{key}.per", lambda: c[3].number_input("Per page", 1, 32, 6, key=f"{key}.per"), 6, number_in(1, 32)
    )
    c2 = st.columns([3, 2])
    typed = url_widget(
        "idx",
        f"{key}.idx",
        lambda: c2[0].text_input("Or indices (e.g. 3, 17, 256)", key=f"{key}.idx"),
        "",
        text=lambda v: v.replace(" ", ""),
    ).strip()
    keep = (conf >= lo) & (conf <= hi)
    if relabelled.any():
        flipped = url_widget(
            "labels",
            f"{key}.flipped",
            lambda: c2[1].selectbox(
                "Training labels",
                FLIPPED,
                key=f"{key}.flipped",
                help="Relabelled: trained with a flipped label. "
                "Memorized: relabelled and predicted with the flipped label it was trained with.",
            ),
            "all",
            one_of(FLIPPED),
        )
        if flipped != "all":
            keep &= relabelled & ((pred == trained) if flipped == "memorized" else True)
    if classes:
        keep &= np.isin(labels, classes)
    if which != "all":
        keep &= (pred == labels) if which == "correct" else (pred != labels)
    idx = stratified(np.flatnonzero(keep), labels)
    if typed:
        try:
            idx = np.array([int(t) for t in typed.replace(" ", "").split(",") if t])
        except ValueError:
            st.error(f"indices look like '3, 17, 256'; got {plain(repr(typed))}")
            return split, ()
        if len(idx) and (idx.min() < 0 or idx.max() >= len(labels)):
            st.error(f"indices of the {split} split are 0 to {len(labels) - 1}; got {plain(repr(typed))}")
            return split, ()
    pages = max(1, -(-len(idx) // int(per_page)))
    page = url_widget(
        "page",
        f"{key}.page",
        lambda: c[4].number_input(f"Page (of {pages})", 1, pages, 1, key=f"{key}.page"),
        1,
        number_in(1, pages),
    )
    st.caption(f"{len(idx):,} of {len(labels):,} {split} images match.")
    return split, tuple(int(i) for i in idx[(page - 1) * int(per_page) : page * int(per_page)])


def display_form(key: str) -> Display:
    """Captum's visualize_image_attr options, and which normalization they amount to (the sign and
    the mode are in the address bar)."""
    c = st.columns([2, 2, 1, 1, 2])
    sign = url_widget(
        "sign",
        f"{key}.sign",
        lambda: c[0].radio(
            "Sign",
            SIGNS,
            horizontal=True,
            key=f"{key}.sign",
            format_func=SIGN_LABELS.get,
            help="absolute: how much a pixel matters; positive/negative: the pixels that raise/lower the explained "
            "class's score; all: both, on a red-white-green scale",
        ),
        SIGNS[0],
        one_of(SIGNS),
    )
    mode = url_widget(
        "show",
        f"{key}.mode",
        lambda: c[1].radio(
            "Show",
            MODES,
            horizontal=True,
            key=f"{key}.mode",
            format_func={"blended": "blended over the image", "heat map": "heat map beside it"}.get,
        ),
        MODES[0],
        one_of(MODES),
    )
    alpha = url_widget(
        "opacity",
        f"{key}.opacity",
        lambda: c[2].slider("Opacity", 0.0, 1.0, 0.5, 0.05, key=f"{key}.opacity", disabled=mode != "blended"),
        0.5,
        number_in(0, 1, float),
    )
    perc = url_widget(
        "clip",
        f"{key}.perc",
        lambda: c[3].number_input(
            "Clip top %",
            0.0,
            50.0,
            2.0,
            0.5,
            key=f"{key}.perc",
            help="Captum's outlier_perc: the colour range ends where the sorted |attributions| reach (100 − this)% of "
            "their total",
        ),
        2.0,
        number_in(0, 50, float),
    )
    shared = (
        url_widget(
            "range",
            f"{key}.shared",
            lambda: c[4].radio("Colour range", RANGES, horizontal=True, key=f"{key}.shared"),
            RANGES[0],
            one_of(RANGES),
        )
        == "shared"
    )
    d = Display(sign=sign, mode=mode, alpha=float(alpha), outlier_perc=float(perc), shared=shared)
    st.caption(
        f"Normalization ({'one range for every map shown' if shared else 'each map on its own, as Captum does'}): "
        f"channels summed, {SIGN_LABELS[sign].lower()} kept, divided by the value below which "
        f"{100 - perc:g}% of the |attribution| mass lies, clipped to "
        f"{'[−1, 1]' if sign == 'all' else '[0, 1]'}. Colour bars are in attribution units."
    )
    return d


def maps(key: str = "sal.browse") -> None:
    """The Maps tab: a grid of maps for the chosen images, methods and models (computed as soon as
    the widgets change; a reopened result sets them all first)."""
    reopen(f"{key}.jobs", "saliency", lambda c: {**model_widgets(c.model.run_id), **grid_widgets(c, key)})
    models = pick_models("sal")
    if models:
        browse(models, key)


def grid_widgets(c: GridConfig, key: str) -> dict:
    """The image picker's and method form's widget values that build GridConfig `c` again: its
    images as typed indices, on one page."""
    per = min(32, max(len(c.indices), int(st.session_state.get(f"{key}.per", 6))))
    return {
        f"{key}.split": c.split,
        f"{key}.idx": ",".join(map(str, c.indices)),
        f"{key}.per": per,
        f"{key}.page": 1,
        **method_widgets(c.methods, key),
    }


def browse(models: list[LoadedModel], key: str = "sal.browse") -> None:
    lm = models[0]
    split, indices = image_picker(lm, key)
    methods = method_form(lm, key, url="")
    d = display_form(key)
    if not indices or not methods:
        st.info("Choose at least one image and one method.")
        return
    refs = [ref(m) for m in models]
    submit(
        f"{key}.jobs",
        [
            job(
                "saliency",
                GridConfig(model=r, indices=indices, methods=methods, split=split),
                (r,),
                f"saliency maps of {m.name}",
            )
            for r, m in zip(refs, models)
        ],
    )
    job_panel(f"{key}.jobs", lambda results: _draw_grid(models, split, indices, results, d, key))


def _draw_grid(models, split, indices, results, d: Display, key) -> None:
    if len(results) != len(models):  # a model's job failed: its panel said why
        return
    results = _without_failed(results, key)
    lm = models[0]
    if split == "train":
        ts = training_split(lm)
        data, trained = ts.data, ts.trained_labels
    else:
        data = cached_data(lm.data, "test")
        trained = data.labels.numpy()
    images = data.x(list(indices)).numpy()
    tags = [chr(ord("A") + i) for i in range(len(models))] if len(models) > 1 else [""]
    methods = [METHOD_LABELS[r.config.method] for r in results[0]]
    cols = [f"{t} · {m}" if t else m for t in tags for m in methods]
    cells, titles, table = [], [], []
    for i, idx in enumerate(indices):
        true = int(data.labels[idx])
        head = f"#{idx} · true {plot_text(lm.classes[true])}"
        if int(trained[idx]) != true:
            head += f" · trained as {plot_text(lm.classes[int(trained[idx])])}"
        preds = []
        for t, m, res in zip(tags, models, results):
            first = res[0]
            preds.append(
                f"{t + ': ' if t else ''}pred {plot_text(lm.classes[first.predictions[i]])} {first.confidences[i]:.0%}"
            )
            table.append(
                {
                    "model": m.name,
                    "split": split,
                    "index": idx,
                    "true": lm.classes[true],
                    "trained as": lm.classes[int(trained[idx])],
                    "predicted": lm.classes[first.predictions[i]],
                    "confidence": float(first.confidences[i]),
                }
            )
        titles.append("<br>".join([head, *preds]))  # a line per model: a narrow column still shows it
        cells.append([r.attributions[i] for res in results for r in res])
    if len(models) > 1:
        common, own = what_differs([model_facts(m.record, m.epoch) for m in models])
        st.markdown(
            "  \n".join(
                f"**{t}** = {plain(m.name)} — "
                + (f"differs in: {plain(' · '.join(o))}" if o else "the same recipe, other weights")
                for t, m, o in zip(tags, models, own)
            )
            + (f"  \nShared: {plain(' · '.join(common))}" if common else "")
        )
    fig = attribution_grid(images, cells, titles, cols, d, group=len(methods))  # each model's maps start a row
    st.plotly_chart(fig, config=CONFIG, key=f"{key}.grid", width="content")
    for r in results[0]:
        if r.delta is not None:
            st.caption(
                f"Integrated Gradients completeness error |Σ attr − (f(x) − f(baseline))|: "
                f"max {np.abs(r.delta).max():.2e} (more steps make it smaller)."
            )
    about = {
        "models": "; ".join(
            f"{t + '=' if t else ''}{m.name} ({m.run_id}, epoch {m.epoch})" for t, m in zip(tags, models)
        ),
        "methods": "; ".join(f"{METHOD_LABELS[r.config.method]} ({_params(r.config)})" for r in results[0]),
        "images": f"{split} {', '.join(map(str, indices))}",
        "display": d.describe(),
    }
    lines = [html.unescape(t.replace("<br>", "\n")) for t in titles]  # the titles for a file: text
    buf = io.BytesIO()
    np.savez(
        buf,
        indices=np.array(indices),
        **{f"{m.run_id}__{r.config.method}": r.attributions for m, res in zip(models, results) for r in res},
    )
    c = st.columns(4)
    c[0].download_button(
        "Grid (.png)",
        lambda: grid_file(images, cells, lines, cols, d, about, "png"),
        "saliency_grid.png",
        mime="image/png",
        key=f"{key}.png",
    )
    c[1].download_button(
        "Grid (.pdf)",
        lambda: grid_file(images, cells, lines, cols, d, about, "pdf"),
        "saliency_grid.pdf",
        mime="application/pdf",
        key=f"{key}.pdf",
    )
    c[2].download_button("Attributions (.npz)", buf.getvalue(), "attributions.npz", key=f"{key}.npz")
    c[3].download_button(
        "Predictions (.csv)", pd.DataFrame(table).to_csv(index=False), "predictions.csv", key=f"{key}.csv"
    )


def _without_failed(results: list, key: str) -> list:
    """The methods that worked (for every model); each that failed is said once, with a Retry that
    computes the grid again."""
    bad = {r.config.method: r.error for res in results for r in res if r.error}
    for method, error in bad.items():
        cols = st.columns([6, 1])
        cols[0].error(f"{METHOD_LABELS[method]} failed on this model, so its column is left out: {plain(error)}")
        if cols[1].button("Retry", key=f"{key}.retry.{method}", icon=":material/refresh:"):
            for job_id in st.session_state.get(f"{key}.jobs") or []:
                backend().forget(job_id)
            st.rerun()
    return [[r for r in res if r.config.method not in bad] for res in results]


def _params(cfg: SaliencyConfig) -> str:
    """The settings that shape this method's maps."""
    parts = [f"target {cfg.target}"]
    if cfg.method in ("integrated_gradients", "deeplift"):
        parts.append(f"baseline {cfg.baseline}")
    if cfg.method == "integrated_gradients":
        parts.append(f"{cfg.n_steps} steps")
    if cfg.method in ("smoothgrad", "vargrad"):
        parts.append(f"σ {cfg.noise_level:g}, {cfg.n_samples} samples")
    if cfg.method == "occlusion":
        parts.append(f"window {cfg.window}, stride {cfg.stride}")
    if cfg.method == "gradcam":
        parts.append(f"layer {cfg.layer}")
    return ", ".join(parts)
