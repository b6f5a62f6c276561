"""Similarity page pieces: layer × layer, seeds, over training, all metrics, projections."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go
import streamlit as st

from lenscape.analysis.activations import hidden_layers
from lenscape.analysis.embedding import UMAP_METRICS, ProjectionConfig
from lenscape.analysis.evaluation import CONV_MODES
from lenscape.backend.jobs import job, ref
from lenscape.backend.similarity_tasks import (
    ActSpec,
    ConvergenceConfig,
    LayerMatrixConfig,
    PairConfig,
    ProjectionJobConfig,
    SeedMatrixConfig,
)
from lenscape.ui.common import MODEL_KEY, cached_data, from_url, model_options, models_select, run_model
from lenscape.ui.figures import CONFIG
from lenscape.ui.hover_scatter import Panel, Sprite, hover_scatter, images_to_keep, sprite_sheet
from lenscape.ui.jobs import job_panel, reopen, submit
from lenscape.ui.pickers import bound, param, penultimate, pick_b, pick_model, read, recipe_seeds, set_picker, write
from lenscape.ui.url_widgets import number_in, one_of, some_of

METRIC_LABELS = {
    "linear_cka": "Linear CKA",
    "rbf_cka": "RBF CKA",
    "debiased_cka": "Debiased CKA",
    "cca": "CCA (mean ρ)",
    "svcca": "SVCCA",
    "pwcca": "PWCCA",
}
INVARIANCE = {
    "linear_cka": "orthogonal transforms and isotropic scaling (not arbitrary linear maps)",
    "rbf_cka": "orthogonal transforms and isotropic scaling; sees non-linear structure",
    "debiased_cka": "as linear CKA, with the small-sample bias removed (≈ 0 for unrelated features)",
    "cca": "any invertible linear map; over-fits when examples are few",
    "svcca": "orthogonal transforms and isotropic scaling (any invertible map only when every direction is kept); "
    "noise directions below 99 % of the variance are dropped first",
    "pwcca": "translation, permuting or uniformly scaling neurons, any invertible map of the layer that does not "
    "set the weights (the larger one, or model B's when sizes are equal); weights favour "
    "directions that carry much of the weighting layer's activity",
}


def models_with_data() -> dict[str, dict]:
    return {r: rec for r, rec in model_options().items() if rec.get("data")}


def one_data_set(specs: list) -> bool:
    """True if all models saw the same data set; otherwise says so on the page."""
    if len({str(spec) for spec in specs}) > 1:
        st.error("These models were trained on different data sets: compare models that see the same examples.")
        return False
    return True


def act_spec(key: str) -> ActSpec:
    c = st.columns(3)
    n = bound(
        param(key, "n"),
        f"{key}.n",
        number_in(100, 60000),
        lambda: c[0].number_input(
            "Examples (test set)",
            100,
            60000,
            2000,
            step=500,
            key=f"{key}.n",
            help="The first n test images (all of them if the test set is smaller). CCA wants 5-10x more examples "
            "than features.",
        ),
        2000,
    )
    mode = bound(
        param(key, "mode"),
        f"{key}.mode",
        one_of(CONV_MODES),
        lambda: c[1].selectbox(
            "Convolutional layers",
            list(CONV_MODES),
            key=f"{key}.mode",
            help="pool: average over positions (N, C); flatten: (N, C·H·W); positions: every position a data point (N·H·W, C)",
        ),
        "pool",
    )
    seed = bound(
        param(key, "seed"),
        f"{key}.seed",
        number_in(0, 10_000),
        lambda: c[2].number_input("Baseline seed", 0, 10_000, 0, key=f"{key}.seed"),
        0,
    )
    return ActSpec(n_examples=int(n), conv_mode=mode, seed=int(seed))


def _acts(key: str, acts: ActSpec) -> dict:
    """act_spec's widget values for a stored job's ActSpec (a reopened result)."""
    return {f"{key}.n": acts.n_examples, f"{key}.mode": acts.conv_mode, f"{key}.seed": acts.seed}


def _metric(key: str) -> str:
    return bound(
        param(key, "metric"),
        f"{key}.metric",
        one_of(list(METRIC_LABELS)),
        lambda: st.selectbox("Metric", list(METRIC_LABELS), format_func=METRIC_LABELS.get, key=f"{key}.metric"),
        "linear_cka",
    )


def _submit(state: str, kind: str, cfg, refs, label: str) -> None:
    submit(state, job(kind, cfg, tuple(refs), label))


def shorten(labels: list[str], sep: str = " · ") -> tuple[list[str], str]:
    """Drop the leading " · "-separated parts that every label shares (the common recipe of a set of
    seeds), so that axes show what differs; returns the short labels and the shared part."""
    parts = [label.split(sep) for label in labels]
    common = 0
    while all(len(p) > common + 1 for p in parts) and len({p[common] for p in parts}) == 1:
        common += 1
    return [sep.join(p[common:]) for p in parts], sep.join(parts[0][:common]) if parts else ""


def heatmap(values: np.ndarray, baseline: np.ndarray, rows: list[str], cols: list[str], metric: str) -> go.Figure:
    short, shared = shorten(list(rows) + list(cols))
    rows, cols = short[: len(rows)], short[len(rows) :]
    beaten = np.where(values > baseline, "", "✗")
    text = np.char.add(np.vectorize(lambda v: f"{v:.2f}")(values), beaten)
    fig = go.Figure(
        go.Heatmap(
            z=values,
            x=cols,
            y=rows,
            zmin=0,
            zmax=1,
            colorscale="Viridis",
            text=text,
            texttemplate="%{text}",
            customdata=baseline,
            hovertemplate="%{y}<br>%{x}<br>"
            + METRIC_LABELS[metric]
            + " %{z:.3f}<br>random-network baseline %{customdata:.3f}<extra></extra>",
            colorbar=dict(title=METRIC_LABELS[metric]),
        )
    )
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(
        height=max(350, 60 * len(rows) + 120),
        margin=dict(l=0, r=0, t=40, b=0),
        title=dict(text=shared, font_size=14) if shared else None,
    )
    return fig


def _pick_pair(key: str):
    """(the two columns, model A, model B) or None: A is the current model, B by default another seed
    of A's recipe (ui.pickers.pick_b); each with a checkpoint picker."""
    c = st.columns(2)
    with c[0]:
        a = pick_model(f"{key}.a", "Model A", epoch_param=param(key, "epoch"), current=True)
    if a is None:
        return None
    with c[1]:
        b = pick_b(f"{key}.b", "Model B", a, param(key, "b"), param(key, "b_epoch"))
    return None if b is None else (c, a, b)


def _pair_widgets(key: str, a, b) -> dict:
    """The pair pickers' values for a stored job's two ModelRefs."""
    return {**set_picker(f"{key}.a", a, current=True), **set_picker(f"{key}.b", b)}


def _modules(lm) -> list[str]:
    return [n for n, _ in lm.model.named_modules() if n]


def layer_matrix(key: str = "sim.layers") -> None:
    reopen(
        f"{key}.job",
        "layer_similarity",
        lambda c: {
            **_pair_widgets(key, c.a, c.b),
            f"{key}.la.{c.a.run_id}": list(c.layers_a),
            f"{key}.lb.{c.b.run_id}": list(c.layers_b),
            f"{key}.metric": c.metric,
            **_acts(key, c.acts),
        },
    )
    pair = _pick_pair(key)
    if pair is None:
        return
    c, a, b = pair
    # layer pickers are keyed by model: under a fixed key Streamlit keeps the previous model's choice,
    # cut down to the layer names both models happen to share
    la = _layer_list(key, "la", c[0], a, "Layers of A")
    lb = _layer_list(key, "lb", c[1], b, "Layers of B")
    metric, acts = _metric(key), act_spec(key)
    if not one_data_set([a.data, b.data]):
        return
    if st.button("Compute", type="primary", key=f"{key}.run", disabled=not (la and lb)):
        ra, rb = ref(a), ref(b)
        _submit(
            f"{key}.job",
            "layer_similarity",
            LayerMatrixConfig(a=ra, b=rb, layers_a=tuple(la), layers_b=tuple(lb), metric=metric, acts=acts),
            (ra, rb),
            f"{METRIC_LABELS[metric]}: {a.name} × {b.name}",
        )
    job_panel(f"{key}.job", lambda res: _show_matrix(res[0], key))


LAYER_BASELINE = (
    "the same rows compared with a randomly initialized network of the columns' architecture (hover for the baseline)"
)
SEED_BASELINE = (
    "the larger of the two models' values against a randomly initialized network of the same "
    "architecture, so a cell and its mirror agree (hover for the baseline)"
)


GROUPED_ABOVE = 40  # modules: above this many, a layer picker first asks which block to list


def _layer_list(key: str, side: str, col, lm, label: str) -> list[str]:
    """A multiselect of `lm`'s layers (by default the hidden ones), bound to ?<tab>.<side>=. A model
    of many modules (a ResNet-50 has 150+) lists its blocks first; a picker above it lists a block's
    layers, or all; typing in the box searches them."""
    wkey = f"{key}.{side}.{lm.run_id}"
    return bound(
        param(key, side),
        wkey,
        some_of(_modules(lm)),
        lambda: col.multiselect(
            label,
            _listed(col, lm, wkey),
            hidden_layers(lm.model),
            key=wkey,
            placeholder="Type to search layers",
        ),
        hidden_layers(lm.model),
    )


def _listed(col, lm, wkey: str) -> list[str]:
    names = _modules(lm)
    if len(names) <= GROUPED_ABOVE:
        return names
    groups = list(dict.fromkeys(n.split(".", 1)[0] for n in names))
    blocks = "blocks (two levels)"
    group = col.selectbox(
        f"Layers listed ({len(names)} in all)",
        [blocks, *groups, "all"],
        key=f"{wkey}.group",
        help="A large model's layers, a block at a time: its blocks two levels down, one block's "
        "layers, or every module.",
    )
    if group == "all":
        shown = set(names)
    elif group == blocks:
        shown = {n for n in names if n.count(".") <= 1}
    else:
        shown = {n for n in names if n == group or n.startswith(f"{group}.")}
    keep = {*hidden_layers(lm.model), *(st.session_state.get(wkey) or [])}  # chosen stay listed
    return [n for n in names if n in shown or n in keep]


def _layer_one(key: str, side: str, col, layers: list[str], label: str, wkey: str) -> str:
    """A selectbox of `layers`, by default the last before the logits, bound to ?<tab>.<side>=."""
    if st.session_state.get(wkey) not in layers:
        st.session_state.pop(wkey, None)
    return bound(
        param(key, side),
        wkey,
        one_of(layers),
        lambda: col.selectbox(label, layers, index=layers.index(penultimate(layers)), key=wkey),
        penultimate(layers),
    )


def _show_matrix(m, key: str, baseline: str = LAYER_BASELINE) -> None:
    st.plotly_chart(heatmap(m.values, m.baseline, m.rows, m.cols, m.metric), config=CONFIG, key=f"{key}.heat")
    st.caption(f"✗ marks a value that does not beat its null baseline: {baseline}.")
    for note in m.notes:
        st.warning(note)
    table = pd.DataFrame(m.values, index=m.rows, columns=m.cols)
    st.download_button("Matrix (.csv)", table.to_csv(), "similarity.csv", key=f"{key}.csv")


def seed_matrix(key: str = "sim.seeds") -> None:
    cfg = reopen(
        f"{key}.job",
        "seed_similarity",
        lambda c: {
            f"{key}.models": [r.run_id for r in c.models],
            f"{key}.layer": c.layer,
            f"{key}.metric": c.metric,
            **_acts(key, c.acts),
        },
    )
    _default_models(f"{key}.models", param(key, "models"), cfg, seeds=True)
    models = models_select(f"{key}.models", "Models (e.g. seeds of one recipe)", default=3)
    write(param(key, "models"), f"{key}.models", [m.run_id for m in models])
    if len(models) < 2:
        st.info(
            "Pick at least two models: seeds of one recipe (the Models page trains several seeds at once, e.g. '0-2')."
        )
        return
    if not one_data_set([m.data for m in models]):
        return
    names = [{n for n, _ in m.model.named_modules()} for m in models[1:]]
    shared = [n for n in hidden_layers(models[0].model) if all(n in these for these in names)]
    if not shared:
        st.error(
            "These models have no layer name in common: compare seeds or variants of one architecture here, "
            "or use the Layers × layers tab."
        )
        return
    layer = _layer_one(key, "layer", st, shared, "Layer", f"{key}.layer")
    metric, acts = _metric(key), act_spec(key)
    if st.button("Compute", type="primary", key=f"{key}.run"):
        refs = tuple(ref(m) for m in models)
        _submit(
            f"{key}.job",
            "seed_similarity",
            SeedMatrixConfig(models=refs, layer=layer, metric=metric, acts=acts),
            refs,
            f"{METRIC_LABELS[metric]} across {len(refs)} models at {layer}",
        )
    job_panel(f"{key}.job", lambda res: _show_matrix(res[0], key, SEED_BASELINE))


def _default_models(key: str, models_param: str, reopened, seeds: bool) -> None:
    """Before a models multiselect: a link's list (?<tab>.models=); else, on the first draw or when
    ?model= names a model not in the list, the current model (the newest without one), with the
    other seeds of its recipe where `seeds`. A reopened job's list (`reopened`) stays."""
    runs = models_with_data()
    named = st.query_params.get("model") in runs and from_url("model", MODEL_KEY)
    if read(models_param, key, some_of(list(runs))) or reopened is not None:
        return
    if key not in st.session_state or (named and st.session_state[MODEL_KEY] not in st.session_state[key]):
        anchor = st.session_state.get(MODEL_KEY) if st.session_state.get(MODEL_KEY) in runs else next(iter(runs))
        st.session_state[key] = recipe_seeds(anchor, runs) if seeds else [anchor]


def convergence(key: str = "sim.train") -> None:
    reopen(
        f"{key}.job",
        "convergence",
        lambda c: {
            f"{key}.model": c.model.run_id,
            f"{key}.layers.{c.model.run_id}": list(c.layers),
            f"{key}.metric": c.metric,
            **_acts(key, c.acts),
        },
    )
    lm = pick_model(
        f"{key}.model",
        "Model",
        min_checkpoints=2,
        empty="No model with several checkpoints: train one on the Models page.",
    )
    if lm is None:
        return
    layers = _layer_list(key, "layers", st, lm, "Layers")
    metric, acts = _metric(key), act_spec(key)
    if st.button("Compute", type="primary", key=f"{key}.run", disabled=not layers):
        r = ref(lm)
        _submit(
            f"{key}.job",
            "convergence",
            ConvergenceConfig(model=r, layers=tuple(layers), metric=metric, acts=acts),
            (r,),
            f"convergence of {lm.name}",
        )
    job_panel(f"{key}.job", lambda res: _show_convergence(res[0], key))


def _show_convergence(c, key: str) -> None:
    fig = go.Figure()
    palette = px.colors.qualitative.D3
    for i, layer in enumerate(c.layers):
        color = palette[i % len(palette)]
        fig.add_trace(
            go.Scatter(x=c.epochs, y=c.values[:, i], name=layer, mode="lines+markers", line=dict(color=color))
        )
        fig.add_trace(
            go.Scatter(
                x=[c.epochs[0], c.epochs[-1]],
                y=[c.baseline[i]] * 2,
                mode="lines",
                showlegend=False,
                line=dict(color=color, dash="dot"),
                hovertemplate=f"{layer} random baseline %{{y:.3f}}",
            )
        )
    fig.update_layout(
        xaxis=dict(
            title="epoch (0 = initialization)",
            tickformat="d",  # epochs are whole
            dtick=1 if len(c.epochs) <= 20 else None,
        ),
        yaxis=dict(title=f"{METRIC_LABELS[c.metric]} with the final state", range=[0, 1.02]),
        height=420,
        margin=dict(l=0, r=0, t=30, b=0),
    )
    st.plotly_chart(fig, config=CONFIG, key=f"{key}.fig")
    st.caption(
        "Dotted lines: each layer's final state against a randomly initialized network. Layers whose curve "
        "reaches 1 early have converged early."
    )
    table = pd.DataFrame(c.values, index=c.epochs, columns=c.layers)
    st.download_button("Values (.csv)", table.to_csv(index_label="epoch"), "convergence.csv", key=f"{key}.csv")


def all_metrics(key: str = "sim.pair") -> None:
    reopen(
        f"{key}.job",
        "all_metrics",
        lambda c: {
            **_pair_widgets(key, c.a, c.b),
            f"{key}.la.{c.a.run_id}": c.layer_a,
            f"{key}.lb.{c.b.run_id}": c.layer_b,
            **_acts(key, c.acts),
        },
    )
    pair = _pick_pair(key)
    if pair is None:
        return
    c, a, b = pair
    la = _layer_one(key, "la", c[0], hidden_layers(a.model), "Layer of A", f"{key}.la.{a.run_id}")
    lb = _layer_one(key, "lb", c[1], hidden_layers(b.model), "Layer of B", f"{key}.lb.{b.run_id}")
    acts = act_spec(key)
    if not one_data_set([a.data, b.data]):
        return
    if st.button("Compute all metrics", type="primary", key=f"{key}.run"):
        ra, rb = ref(a), ref(b)
        _submit(
            f"{key}.job",
            "all_metrics",
            PairConfig(a=ra, b=rb, layer_a=la, layer_b=lb, acts=acts),
            (ra, rb),
            f"all metrics: {a.name}:{la} × {b.name}:{lb}",
        )
    job_panel(f"{key}.job", lambda res: _show_pair(res[0], key))


def _show_pair(p, key: str) -> None:
    labels = [METRIC_LABELS[m] for m in p.metrics]
    fig = go.Figure(
        [
            go.Bar(x=labels, y=p.values, name="the two layers"),
            go.Bar(x=labels, y=p.random_network, name="vs a random network"),
            go.Bar(x=labels, y=p.shuffled, name="examples shuffled"),
        ]
    )
    fig.update_layout(
        barmode="group",
        yaxis=dict(range=[0, 1.02], title="similarity"),
        height=380,
        margin=dict(l=0, r=0, t=30, b=0),
        legend=dict(orientation="h", y=-0.2),
    )
    st.plotly_chart(fig, config=CONFIG, key=f"{key}.bars")
    table = pd.DataFrame(
        {
            "metric": labels,
            "value": p.values,
            "random network": p.random_network,
            "shuffled": p.shuffled,
            "beats baselines": (p.values > p.random_network) & (p.values > p.shuffled),
            "invariant to": [INVARIANCE[m] for m in p.metrics],
        }
    )
    st.dataframe(
        table.drop(columns="invariant to"),
        hide_index=True,
        column_config={
            c: st.column_config.NumberColumn(format="%.3f") for c in ("value", "random network", "shuffled")
        },
    )
    st.markdown(
        "**What each metric ignores** (a difference of that kind between the layers does not lower it):\n"
        + "\n".join(f"- **{METRIC_LABELS[m]}**: {INVARIANCE[m]}" for m in p.metrics)
    )
    for note in p.notes:
        st.warning(note)
    st.download_button("Table (.csv)", table.to_csv(index=False), "metrics.csv", key=f"{key}.csv")


def _projection_widgets(key: str, c: ProjectionJobConfig) -> dict:
    """The Projection tab's widget values for a stored job (one model: the link names one job)."""
    p, run = c.projection, c.model.run_id
    return {
        f"{key}.models": [run],
        f"{key}.layer.{run}": c.layer,
        f"{key}.method": p.method,
        f"{key}.split": c.split,
        f"{key}.n": c.n_examples,
        f"{key}.nn": p.n_neighbors,
        f"{key}.md": p.min_dist,
        f"{key}.metric": p.metric,
        f"{key}.seed": p.seed,
        f"{key}.shown": ([run], c.split),
    }


def projection(key: str = "sim.proj") -> None:
    # a link (e.g. from a memorized example on the Memorization page) names the model, the split and
    # an example to mark: ?model=...&split=train&mark=17&colour=memorized. It projects at once. Those
    # three keep their names; the other settings are ?proj.<setting>=.
    reopened = reopen(f"{key}.jobs", "projection", lambda c: _projection_widgets(key, c))
    linked = read("mark", f"{key}.mark", number_in(0, None))
    _default_models(f"{key}.models", param(key, "models"), reopened, seeds=False)
    models = models_select(f"{key}.models", "Models (side by side)", default=1, max_selections=2)
    write(param(key, "models"), f"{key}.models", [m.run_id for m in models])
    if not models:
        return
    picked, layers = [m.run_id for m in models], hidden_layers(models[0].model)
    if linked:  # the last layer before the logits
        st.session_state[f"{key}.layer.{models[0].run_id}"] = penultimate(layers)
    c = st.columns(4)
    layer = _layer_one(key, "layer", c[0], layers, "Layer", f"{key}.layer.{models[0].run_id}")
    method = bound(
        param(key, "method"),
        f"{key}.method",
        one_of(["umap", "pca"]),
        lambda: c[1].radio("Method", ["umap", "pca"], horizontal=True, key=f"{key}.method"),
        "umap",
    )
    split = bound(
        "split",
        f"{key}.split",
        one_of(["test", "train"]),
        lambda: c[2].radio(
            "Examples from",
            ["test", "train"],
            horizontal=True,
            key=f"{key}.split",
            help="The training split shows relabelled (memorized) examples where there was label noise.",
        ),
        "test",
    )
    n = bound(
        param(key, "n"),
        f"{key}.n",
        number_in(100, 70000),
        lambda: c[3].number_input(
            "Examples",
            100,
            70000,
            2000,
            step=500,
            key=f"{key}.n",
            help="The split's first n examples (a marked example beyond them is added by raising n).",
        ),
        2000,
    )
    c = st.columns(5)
    neighbors = bound(
        param(key, "nn"),
        f"{key}.nn",
        number_in(2, 200),
        lambda: c[0].number_input("UMAP neighbours", 2, 200, 15, key=f"{key}.nn"),
        15,
    )
    min_dist = bound(
        param(key, "md"),
        f"{key}.md",
        number_in(0.0, 1.0, float),
        lambda: c[1].number_input("UMAP min_dist", 0.0, 1.0, 0.1, key=f"{key}.md"),
        0.1,
    )
    metric = bound(
        param(key, "metric"),
        f"{key}.metric",
        one_of(UMAP_METRICS),
        lambda: c[2].selectbox("UMAP metric", UMAP_METRICS, key=f"{key}.metric"),
        "euclidean",
    )
    seed = bound(
        param(key, "seed"),
        f"{key}.seed",
        number_in(0, 10_000),
        lambda: c[3].number_input("Seed", 0, 10_000, 0, key=f"{key}.seed"),
        0,
    )
    mark = c[4].number_input(
        "Mark example #",
        0,
        None,
        None,
        key=f"{key}.mark",
        placeholder="index",
        help="Draw this example of the split as a star, in every panel.",
    )
    write("mark", f"{key}.mark", mark)
    colour = bound(
        "colour",
        f"{key}.colour",
        one_of(["class", "correct", "memorized"]),
        lambda: st.radio("Colour by", ["class", "correct", "memorized"], horizontal=True, key=f"{key}.colour"),
        "class",
    )
    cfg = ProjectionConfig(
        method=method, n_neighbors=int(neighbors), min_dist=float(min_dist), metric=metric, seed=int(seed)
    )
    n_examples = max(int(n), int(mark) + 1) if mark is not None else int(n)
    if st.button("Project", type="primary", key=f"{key}.run") or linked:
        submit(
            f"{key}.jobs",
            [
                job(
                    "projection",
                    ProjectionJobConfig(
                        model=ref(m),
                        layer=layer if layer in hidden_layers(m.model) else hidden_layers(m.model)[-1],
                        projection=cfg,
                        split=split,
                        n_examples=n_examples,
                    ),
                    (ref(m),),
                    f"{method.upper()} of {m.name}",
                )
                for m in models
            ],
        )
        st.session_state[f"{key}.shown"] = (picked, split)
    job_panel(f"{key}.jobs", lambda res: _show_projections(res, key, colour, mark))


@st.cache_resource(show_spinner="Preparing thumbnails…", max_entries=8)
def _sprite(spec, split: str, n: int) -> Sprite:
    """Thumbnails of the first n examples of a split (the projection job takes the split's head)."""
    data = cached_data(spec, split)
    keep = np.arange(min(n, len(data), images_to_keep(tuple(data.images.shape[1:]))))
    return sprite_sheet(data.images[keep].numpy(), keep)


def _show_projections(results, key: str, colour: str, mark: int | None = None) -> None:
    picked, split = st.session_state[f"{key}.shown"]
    runs = models_with_data()
    panels, frames = [], []
    for res, run_id in zip(results, picked):
        lm = run_model(runs[run_id]) if run_id in runs else None
        if lm is None:
            st.warning(f"{run_id} is no longer in the workspace.")
            return
        proj = res.projection
        frame = pd.DataFrame(
            {
                "x": proj.coords[:, 0],
                "y": proj.coords[:, 1],
                "index": res.indices,
                "class": [lm.classes[int(v)] for v in res.labels],
                "correct": np.where(res.predictions == res.labels, "correct", "wrong"),
                "memorized": np.where(res.noisy, "relabelled", "clean"),
            }
        )
        axes = (
            {"x": f"PC1 ({proj.explained[0]:.0%})", "y": f"PC2 ({proj.explained[1]:.0%})"}
            if proj.explained is not None
            else {"x": "UMAP 1", "y": "UMAP 2"}
        )
        fig = px.scatter(
            frame,
            x="x",
            y="y",
            color=colour,
            custom_data=["index"],
            hover_data={"index": True, "class": True, "correct": True, "x": False, "y": False},
            labels=axes,
            render_mode="webgl",
            opacity=0.7,
            template="plotly_white",
            category_orders={
                "class": list(lm.classes),
                "correct": ["correct", "wrong"],
                "memorized": ["clean", "relabelled"],
            },
            color_discrete_sequence=px.colors.qualitative.T10 if colour == "class" else ["#9aa5b8", "#e4572e"],
        )
        fig.update_traces(marker_size=4 if colour == "class" else 5)
        if mark is not None and (hit := np.flatnonzero(res.indices == mark)).size:
            j = int(hit[0])
            fig.add_trace(
                go.Scatter(
                    x=[proj.coords[j, 0]],
                    y=[proj.coords[j, 1]],
                    mode="markers+text",
                    name=f"#{mark}",
                    text=[f"#{mark}"],
                    textposition="top center",
                    customdata=[[mark]],
                    hoverinfo="skip",
                    marker=dict(symbol="star", size=18, color="#ffd23f", line=dict(color="#1b1b1b", width=1.5)),
                )
            )
        elif mark is not None:
            st.caption(f"Example #{mark} is not among the {len(res.indices):,} projected: press Project again.")
        fig.update_layout(
            margin=dict(l=0, r=0, t=36, b=0), legend_title_text=colour, font_family="Source Sans Pro, sans-serif"
        )
        predicted = [lm.classes[int(v)] for v in res.predictions]
        captions = [
            f"#{i} · class {c} · predicted {q}" + (" · relabelled" if m == "relabelled" else "")
            for i, c, q, m in zip(frame["index"], frame["class"], predicted, frame["memorized"])
        ]
        panels.append(
            Panel(
                figure=fig,
                title=lm.name,
                index=res.indices,
                xy=proj.coords,
                captions=captions,
                sprite=_sprite(lm.data, split, len(res.indices)),
                dataset=f"{lm.data}/{split}",
            )
        )
        frames.append(frame)
    hover_scatter(panels, key=f"{key}.scatter")
    cols = st.columns(len(results))
    for i, (frame, panel, res) in enumerate(zip(frames, panels, results)):
        c, kept = res.projection.config, len(panel.sprite.indices)
        with cols[i]:
            shown = (
                f"UMAP · neighbours {c.n_neighbors} · min_dist {c.min_dist} · {c.metric} · seed {c.seed}"
                if c.method == "umap"
                else "PCA · axes: the two directions of largest variance (share in the axis titles)"
            )
            st.caption(
                f"{shown} · {len(frame):,} examples"
                + (f" · images kept for the first {kept:,}" if len(frame) > kept else "")
            )
            params = (
                f"{c.method}_nn{c.n_neighbors}_md{c.min_dist}_{c.metric}_seed{c.seed}"
                if c.method == "umap"
                else f"pca_seed{c.seed}"
            )
            st.download_button(
                "Coordinates (.csv)", frame.to_csv(index=False), f"projection_{i}_{params}.csv", key=f"{key}.csv{i}"
            )
