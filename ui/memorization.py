"""Memorization page pieces (Maini et al. 2023): the overview of what was memorized, gradient
accounting, layer rewinding, retraining, neuron flipping and example-tied dropout."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from lenscape.analysis.memorization import (
    GROUPING_HELP,
    GROUPINGS,
    FlipConfig,
    RetrainConfig,
    layer_groups,
    paper_grouping,
)
from lenscape.backend.jobs import job, ref
from lenscape.backend.memorization_tasks import (
    FlipJobConfig,
    GradientsConfig,
    RetrainJobConfig,
    SweepConfig,
    TiedDropoutConfig,
)
from lenscape.backend.tasks import train_jobs
from lenscape.models.training import preset
from lenscape.models.zoo import LoadedModel, training_data
from lenscape.ui.common import plain, run_safely
from lenscape.ui.figures import CONFIG, image_grid
from lenscape.ui.jobs import job_panel, reopen, submit

TEACHING = {
    "overview": "Some training labels were flipped on purpose (the noise rate). A model that fits them anyway "
    "has **memorized** those examples: it predicts the wrong, noisy label it was taught. The curves "
    "show the clean examples learnt early and the noisy ones fitted late, while test accuracy stalls.",
    "gradients": "**Gradient accounting** splits every batch's gradient into the part from clean and the part "
    "from relabelled examples (they add up to the full gradient) and sums each over the epoch while "
    "it trains, as the paper does. The paper finds the 10% noisy share's gradient about as large as "
    "the clean 90%'s, and pointing the other way (negative cosine).",
    "rewinding": "**Layer rewinding** puts one layer's weights back to an earlier checkpoint in the final model. "
    "If the noisy examples' accuracy collapses while the clean accuracy holds, that layer holds "
    "their memorization. The paper finds it in a few layers, generally not the last ones.",
    "retraining": "**Retraining** resets one layer to its initial weights, freezes the others and trains the layer "
    "on the clean examples only. If the noisy examples come back anyway, other layers hold what "
    "was memorized about them: memorization is spread out, and redundant.",
    "flipping": "**Neuron flipping** removes neurons (a conv channel or a linear unit), greedily, the one whose "
    "removal most raises the example's loss while keeping the rest of its batch's, until the model "
    "no longer predicts the example's training label. Memorized examples flip with a handful of "
    "neurons; clean ones need many more, and cost more accuracy.",
    "tied": "**Example-tied dropout** trains with generalization neurons always on and memorization neurons each "
    "tied to a few examples. Dropping the memorization neurons at test time should forget the memorized "
    "examples (the paper: from 100% to 3%) while clean and test accuracy barely move.",
}
NOISY_PRESETS = ("digits-mlp-noise10", "mnist-cnn-noise10")
TIED_PRESET = "digits-mlp-tied-dropout"


def train_offer(names: tuple[str, ...], key: str, why: str) -> None:
    """Buttons that train presets as jobs; the page picks the new model up when they finish."""
    st.info(why)
    cols = st.columns(len(names))
    for c, name in zip(cols, names):
        if c.button(f"Train {preset(name).describe()}", key=f"{key}.{name}"):
            submit(f"{key}.jobs", train_jobs(preset(name), [0]), keep_replaced=True)
    job_panel(f"{key}.jobs", lambda recs: st.success(f"Trained {plain(recs[0]['name'])}: pick it above."))


def noisy_or_offer(lm: LoadedModel, key: str) -> bool:
    """True when `lm` was trained with flipped labels; otherwise explains and offers to train one."""
    if (lm.record.get("noise") or {}).get("indices"):
        return True
    if lm.record.get("config") is None:  # imported or added from Python: its labels are not Lenscape's
        st.caption(
            "Trained this model yourself on noisy labels? Add it again from Python with the true labels of its "
            "training split, lenscape.add_model(..., clean_labels=true_labels), and this view finds what it "
            "memorized."
        )
    train_offer(
        NOISY_PRESETS,
        f"{key}.offer",
        f"**{plain(lm.name)}** was trained without label noise, so no training label was flipped and there is "
        "nothing memorized to analyse. Train a model on data with a fraction of flipped labels (the Models "
        "page has every option; these take a minute or two):",
    )
    return False


def _run(key: str, kind: str, cfg, lm: LoadedModel, label: str, button: str, show) -> None:
    if st.button(button, type="primary", key=f"{key}.run"):
        r = ref(lm)
        submit(f"{key}.job", job(kind, cfg(r), (r,), f"{label} of {lm.name}"))
    job_panel(f"{key}.job", lambda res: run_safely(lambda: show(res[0]), label))


def epoch_axis(epochs, title: str = "epoch") -> dict:
    """An x axis of whole epochs: ticks on integers (a few epochs would otherwise read 0.5, 1.5)."""
    last = max(epochs, default=1)
    return dict(title=title, tick0=0, dtick=max(1, -(-int(last) // 10)))


def csv_button(df: pd.DataFrame, name: str, key: str) -> None:
    st.download_button(f"{name} (.csv)", df.to_csv(index=False), f"{name.lower().replace(' ', '_')}.csv", key=key)


def example_links(lm: LoadedModel, res, mem: np.ndarray, key: str) -> None:
    """One memorized example, opened in the other views: its saliency map (training split) and its
    place in the Similarity view's embedding of the training set (marked with a star)."""
    label = {
        int(res.noisy_indices[j]): f"#{int(res.noisy_indices[j])}: {lm.classes[int(res.true_labels[j])]} "
        f"trained as {lm.classes[int(res.noisy_labels[j])]}"
        for j in mem
    }
    c = st.columns([2, 2, 2])
    pick = c[0].selectbox(
        "Open a memorized example in another view", list(label), format_func=label.get, key=f"{key}.open"
    )
    c[1].page_link(
        "pages/2_Saliency.py",
        label=f"Saliency map of #{pick}",
        icon=":material/gradient:",
        query_params={"model": lm.run_id, "open": "Maps", "split": "train", "idx": str(pick)},
        help="Its input-gradient maps, for the label it predicts (the flipped one) or its true label",
    )
    c[2].page_link(
        "pages/5_Similarity.py",
        label=f"#{pick} in the embedding",
        icon=":material/scatter_plot:",
        query_params={
            "model": lm.run_id,
            "open": "Projection",
            "split": "train",
            "mark": str(pick),
            "colour": "memorized",
        },
        help="A UMAP of the training set's last hidden layer with this example starred: is it among "
        "its true class or its taught one?",
    )


# ---------------------------------------------------------------------------------------------


def overview(lm: LoadedModel, key: str = "mem.ov") -> None:
    st.caption(TEACHING["overview"])
    reopen(f"{key}.job", "memorization_overview", lambda c: {f"{key}.stride": c.stride})
    stride = st.number_input("Every n-th checkpoint", 1, 50, 1, key=f"{key}.stride")
    _run(
        key,
        "memorization_overview",
        lambda r: SweepConfig(model=r, stride=int(stride)),
        lm,
        "overview",
        "Show what was memorized",
        lambda res: show_overview(lm, res, key),
    )


def show_overview(lm: LoadedModel, res, key: str) -> None:
    c = st.columns(4)
    c[0].metric("Noise rate", f"{res.noise_fraction:.0%}", help="Share of training labels flipped")
    c[1].metric(
        "Memorized",
        f"{int(res.memorized.sum())} of {len(res.memorized)}",
        help="Relabelled examples the model predicts with their noisy label",
    )
    c[2].metric("Clean train accuracy", f"{res.clean_acc[-1]:.1%}")
    c[3].metric("Test accuracy", f"{res.test_acc[-1]:.1%}")
    fig = go.Figure()
    for y, name, dash in (
        (res.clean_acc, "clean train", "solid"),
        (res.noisy_acc, "noisy train (noisy label: memorized)", "solid"),
        (res.noisy_true_acc, "noisy train (true label)", "dot"),
        (res.test_acc, "test", "dash"),
    ):
        fig.add_trace(go.Scatter(x=res.epochs, y=y, name=name, line=dict(dash=dash)))
    fig.update_layout(
        height=340,
        margin=dict(l=0, r=0, t=30, b=0),
        xaxis=epoch_axis(res.epochs),
        yaxis=dict(title="accuracy", range=[0, 1.02]),
        title="Accuracy over training",
        legend=dict(orientation="h", y=-0.25),
    )
    st.plotly_chart(fig, config=CONFIG, key=f"{key}.curves")
    mem = np.flatnonzero(res.memorized)
    if len(mem):
        data = training_data(lm)
        shown = mem[:32]
        idx = res.noisy_indices[shown].tolist()
        titles = [
            f"#{t} {lm.classes[int(a)]}→{lm.classes[int(b)]}"
            for t, a, b in zip(idx, res.true_labels[shown], res.noisy_labels[shown])
        ]
        st.markdown(
            f"**Memorized examples** (the first {len(shown)} of {len(mem)}; title: training index, true → noisy label)"
        )
        st.plotly_chart(
            image_grid(data.train.x(idx).numpy(), titles, cols=16, height_per_row=100),
            config=CONFIG,
            key=f"{key}.gallery",
            width="content",
        )
        example_links(lm, res, mem, key)
    table = pd.DataFrame(
        {
            "training index": res.noisy_indices,
            "true label": [lm.classes[int(i)] for i in res.true_labels],
            "noisy label": [lm.classes[int(i)] for i in res.noisy_labels],
            "predicted": [lm.classes[int(i)] for i in res.predictions],
            "memorized": res.memorized,
        }
    )
    with st.expander(f"All {len(table)} relabelled examples"):
        st.dataframe(table, hide_index=True)
    csv_button(table, "Relabelled examples", f"{key}.csv")


# ---------------------------------------------------------------------------------------------

SOURCES = {"training": "while each epoch trained (the paper's)", "checkpoints": "at each checkpoint's fixed weights"}


def grouping_choice(lm: LoadedModel, key: str) -> str:
    """What a "layer" is: the paper's groups by default (a conv with its BatchNorm, a ResNet's stages)."""
    paper = paper_grouping(lm.model)
    labels = {
        "paper": f"as the paper ({paper})",
        "layer": "layer (conv + its norm)",
        "block": "block (top-level)",
        "module": "module (each apart)",
    }
    by = st.selectbox(
        "Layer groups",
        GROUPINGS,
        format_func=labels.get,
        key=f"{key}.grouping",
        help=" · ".join(f"{labels[g]}: {GROUPING_HELP[g]}" for g in GROUPINGS),
    )
    return str(by)


def gradients(lm: LoadedModel, key: str = "mem.gr") -> None:
    st.caption(TEACHING["gradients"])
    reopen(
        f"{key}.job",
        "memorization_gradients",
        lambda c: {f"{key}.source": c.source, f"{key}.grouping": c.grouping, f"{key}.stride": c.stride},
    )
    recorded = bool((lm.record or {}).get("gradients"))
    c = st.columns([2, 1, 1])
    source = c[0].radio(
        "Measured",
        list(SOURCES),
        format_func=SOURCES.get,
        index=0 if recorded else 1,
        horizontal=True,
        key=f"{key}.source",
        help="The paper sums each batch's split while the epoch trains (the weights move between "
        "batches). Recomputing it at a saved checkpoint is a different measurement: it can "
        "disagree until the learning rate has decayed.",
    )
    with c[1]:
        by = grouping_choice(lm, key)
    if source == "training" and not recorded:
        st.info(
            "This run has no gradients recorded during training: it was trained before Lenscape kept them, "
            "or imported. The checkpoint version is offered instead; train the recipe again for the paper's."
        )
        return
    stride = 1
    if source == "checkpoints":
        st.caption(
            "Checkpoint version: the split recomputed at each saved checkpoint's weights, one pass over the "
            "training set. Not what the paper measures; early in training it can even change sign."
        )
        stride = c[2].number_input(
            "Every n-th checkpoint", 1, 50, max(1, len(lm.record["checkpoints"]) // 10), key=f"{key}.stride"
        )
    _run(
        key,
        "memorization_gradients",
        lambda r: GradientsConfig(model=r, source=source, grouping=by, stride=int(stride)),
        lm,
        "gradient accounting",
        "Account for the gradients",
        lambda res: show_gradients(res, key),
    )


def show_gradients(res, key: str) -> None:
    fig = make_subplots(
        rows=1,
        cols=3,
        subplot_titles=("clean: Σ‖G‖/√numel", "noisy: Σ‖G‖/√numel", "cos(clean, noisy)"),
        shared_yaxes=True,
        horizontal_spacing=0.09,
    )  # layer names once, clear of the colour bars
    zmax = float(max(res.clean_norm.max(), res.noisy_norm.max()))
    for j, (z, scale, rng) in enumerate(
        ((res.clean_norm, "Viridis", (0, zmax)), (res.noisy_norm, "Viridis", (0, zmax)), (res.cosine, "RdBu", (-1, 1)))
    ):
        fig.add_trace(
            go.Heatmap(
                z=z.T,
                x=[str(e) for e in res.epochs],
                y=res.groups,
                colorscale=scale,
                zmin=rng[0],
                zmax=rng[1],
                showscale=j != 0,
                colorbar=dict(x=0.645 if j == 1 else 1.0, len=0.9, thickness=12),
            ),
            1,
            j + 1,
        )
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(title_text="epoch", type="category")
    fig.update_layout(height=80 + 40 * len(res.groups) + 120, margin=dict(l=0, r=0, t=40, b=0))
    st.plotly_chart(fig, config=CONFIG, key=f"{key}.heat")
    ratio = res.noisy_norm.sum(1) / np.maximum(res.clean_norm.sum(1), 1e-12)
    line = go.Figure(
        [
            go.Scatter(x=res.epochs, y=ratio, name="noisy / clean norm"),
            go.Scatter(x=res.epochs, y=res.cosine.mean(1), name="mean cosine", yaxis="y2"),
        ]
    )
    line.update_layout(
        height=280,
        margin=dict(l=0, r=0, t=30, b=0),
        xaxis=epoch_axis(res.epochs),
        yaxis=dict(title="noisy / clean", rangemode="tozero"),
        yaxis2=dict(
            title="cosine", overlaying="y", side="right", range=[-1, 1], showgrid=False, tickvals=[-1, -0.5, 0, 0.5, 1]
        ),
        title="The noisy share against the clean one, over training",
        legend=dict(orientation="h", y=-0.3),
    )
    st.plotly_chart(line, config=CONFIG, key=f"{key}.line")
    rows = [
        {
            "epoch": e,
            "layer": g,
            "clean": res.clean_norm[i, j],
            "noisy": res.noisy_norm[i, j],
            "cosine": res.cosine[i, j],
        }
        for i, e in enumerate(res.epochs)
        for j, g in enumerate(res.groups)
    ]
    csv_button(pd.DataFrame(rows), "Gradient accounting", f"{key}.csv")


# ---------------------------------------------------------------------------------------------


def rewinding(lm: LoadedModel, key: str = "mem.rw") -> None:
    st.caption(TEACHING["rewinding"])
    reopen(f"{key}.job", "memorization_rewinding", lambda c: {f"{key}.stride": c.stride, f"{key}.grouping": c.grouping})
    c = st.columns([1, 2])
    stride = c[0].number_input(
        "Every n-th checkpoint", 1, 50, max(1, len(lm.record["checkpoints"]) // 10), key=f"{key}.stride"
    )
    with c[1]:
        by = grouping_choice(lm, key)
    _run(
        key,
        "memorization_rewinding",
        lambda r: SweepConfig(model=r, stride=int(stride), grouping=by),
        lm,
        "layer rewinding",
        "Rewind each layer",
        lambda res: show_rewinding(res, key),
    )


def show_rewinding(res, key: str) -> None:
    titles = (
        f"clean train (final {res.final['clean']:.0%})",
        f"noisy train, noisy label (final {res.final['noisy']:.0%})",
        f"test (final {res.final['test']:.0%})",
    )
    fig = make_subplots(rows=1, cols=3, subplot_titles=titles, shared_yaxes=True)
    for j, z in enumerate((res.clean_acc, res.noisy_acc, res.test_acc)):
        fig.add_trace(
            go.Heatmap(
                z=z,
                x=[str(e) for e in res.epochs],
                y=res.groups,
                zmin=0,
                zmax=1,
                colorscale="Viridis",
                showscale=j == 2,
                text=np.round(z, 2),
                texttemplate="%{text}",
                hovertemplate="rewind %{y} to epoch %{x}: %{z:.1%}<extra></extra>",
            ),
            1,
            j + 1,
        )
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(title_text="rewound to epoch", type="category")
    fig.update_layout(height=120 + 45 * len(res.groups), margin=dict(l=0, r=0, t=40, b=0))
    st.plotly_chart(fig, config=CONFIG, key=f"{key}.heat")
    st.caption(
        "Each cell: the final model with that layer group's weights (not BatchNorm statistics) from that epoch. "
        "A layer whose rewinding drops the noisy accuracy but not the clean one holds memorization."
    )
    rows = [
        {"layer": g, "epoch": e, "clean": res.clean_acc[i, j], "noisy": res.noisy_acc[i, j], "test": res.test_acc[i, j]}
        for i, g in enumerate(res.groups)
        for j, e in enumerate(res.epochs)
    ]
    csv_button(pd.DataFrame(rows), "Layer rewinding", f"{key}.csv")


# ---------------------------------------------------------------------------------------------


def retraining(lm: LoadedModel, key: str = "mem.rt") -> None:
    st.caption(TEACHING["retraining"])
    reopen(
        f"{key}.job",
        "memorization_retraining",
        lambda c: {
            f"{key}.grouping": c.grouping,
            f"{key}.groups.{c.grouping}": list(c.groups) or list(layer_groups(lm.model, c.grouping)),
            f"{key}.epochs": c.retrain.max_epochs,
            f"{key}.lr": c.retrain.lr,
        },
    )
    by = grouping_choice(lm, key)
    groups = list(layer_groups(lm.model, by))
    c = st.columns([3, 1, 1])
    chosen = c[0].multiselect("Layers to retrain (one at a time)", groups, groups, key=f"{key}.groups.{by}")
    epochs = c[1].number_input("At most epochs", 1, 100, 20, key=f"{key}.epochs")
    lr = c[2].number_input("Peak learning rate", 1e-4, 1.0, 0.01, format="%.4f", key=f"{key}.lr")
    if not chosen:
        st.info("Choose at least one layer.")
        return
    _run(
        key,
        "memorization_retraining",
        lambda r: RetrainJobConfig(
            model=r, groups=tuple(chosen), grouping=by, retrain=RetrainConfig(lr=float(lr), max_epochs=int(epochs))
        ),
        lm,
        "retraining",
        "Retrain the layers",
        lambda res: show_retraining(res, key),
    )


def show_retraining(res, key: str) -> None:
    final = [float(a[-1]) for a in res.noisy_acc]
    bar = go.Figure(
        [
            go.Bar(
                x=res.groups,
                y=final,
                name="noisy examples after retraining",
                text=[f"{v:.0%}" for v in final],
                textposition="outside",
            ),
            go.Bar(x=res.groups, y=res.test_acc, name="test after retraining", opacity=0.5),
        ]
    )
    bar.add_hline(y=res.final_noisy, line=dict(dash="dot"), annotation_text=f"before: {res.final_noisy:.0%}")
    bar.update_layout(
        height=330,
        margin=dict(l=0, r=0, t=30, b=0),
        yaxis=dict(range=[0, 1.1], title="accuracy"),
        barmode="group",
        title="Accuracy on the (unseen) noisy examples after retraining one layer on clean ones",
        legend=dict(orientation="h", y=-0.25),
    )
    st.plotly_chart(bar, config=CONFIG, key=f"{key}.bar")
    curves = go.Figure([go.Scatter(x=np.arange(1, len(a) + 1), y=a, name=g) for g, a in zip(res.groups, res.noisy_acc)])
    curves.update_layout(
        height=260,
        margin=dict(l=0, r=0, t=30, b=0),
        xaxis=epoch_axis(range(1, 1 + max(len(a) for a in res.noisy_acc)), "retraining epoch"),
        yaxis=dict(title="noisy accuracy", range=[0, 1.02]),
        title="Noisy-example accuracy while retraining",
    )
    st.plotly_chart(curves, config=CONFIG, key=f"{key}.curves")
    csv_button(
        pd.DataFrame(
            {
                "layer": res.groups,
                "noisy accuracy after": final,
                "test accuracy after": res.test_acc,
                "epochs": [len(a) for a in res.noisy_acc],
            }
        ),
        "Retraining",
        f"{key}.csv",
    )


# ---------------------------------------------------------------------------------------------


def flipping(lm: LoadedModel, key: str = "mem.fl") -> None:
    st.caption(TEACHING["flipping"])
    reopen(
        f"{key}.job",
        "memorization_flipping",
        lambda c: {
            f"{key}.nmem": c.n_memorized,
            f"{key}.nclean": c.n_clean,
            f"{key}.batch": c.flip.batch_size,
            f"{key}.cap": c.flip.max_steps,
            f"{key}.drop": c.flip.max_acc_drop,
            f"{key}.seed": c.seed,
        },
    )
    c = st.columns(6)
    n_mem = c[0].number_input("Memorized examples", 0, 1000, 32, key=f"{key}.nmem")
    n_clean = c[1].number_input("Clean examples", 0, 1000, 32, key=f"{key}.nclean")
    batch = c[2].number_input(
        "Batch size",
        2,
        2048,
        256,
        key=f"{key}.batch",
        help="The example plus this many − 1 other training examples, drawn for it alone (the paper: 512).",
    )
    cap = c[3].number_input("At most neurons", 1, 2000, 100, key=f"{key}.cap")
    drop = c[4].number_input(
        "At most accuracy lost",
        0.01,
        1.0,
        0.25,
        key=f"{key}.drop",
        help="Stop once the rest of the example's batch lost this much accuracy.",
    )
    seed = c[5].number_input("Seed", 0, 10_000, 0, key=f"{key}.seed")
    cfg = run_safely(
        lambda: FlipConfig(batch_size=int(batch), max_steps=int(cap), max_acc_drop=float(drop), seed=int(seed)),
        "Flipping settings",
    )
    if cfg is None:
        return
    _run(
        key,
        "memorization_flipping",
        lambda r: FlipJobConfig(model=r, n_memorized=int(n_mem), n_clean=int(n_clean), flip=cfg, seed=int(seed)),
        lm,
        "neuron flipping",
        "Flip the examples",
        lambda res: show_flipping(lm, res, key),
    )


def show_flipping(lm: LoadedModel, res, key: str) -> None:
    kinds = np.array(res.kind)
    c = st.columns(len(set(res.kind)) + 1)
    for i, k in enumerate(sorted(set(res.kind))):
        sel = kinds == k
        c[i].metric(
            f"Median neurons to flip: {k}",
            f"{np.median(res.n_neurons[sel]):g}",
            help=f"{int(sel.sum())} examples; {int(res.flipped[sel].sum())} flipped within the caps",
        )
    c[-1].metric("Test accuracy lost (median)", f"{np.median(res.base_test_acc - res.test_acc):.1%}")
    hist = go.Figure(
        [
            go.Histogram(x=res.n_neurons[kinds == k], name=k, opacity=0.7, xbins=dict(size=1))
            for k in sorted(set(res.kind))
        ]
    )
    hist.update_layout(
        barmode="overlay",
        height=300,
        margin=dict(l=0, r=0, t=30, b=0),
        xaxis_title="neurons removed",
        yaxis_title="examples",
        title="Neurons needed to flip the prediction",
    )
    cols = st.columns(2)
    cols[0].plotly_chart(hist, config=CONFIG, key=f"{key}.hist")
    counts = {k: np.zeros(len(res.layers)) for k in sorted(set(res.kind))}
    for k, ns in zip(res.kind, res.neurons):
        for layer, _ in ns:
            counts[k][layer] += 1
    layers = go.Figure([go.Bar(x=res.layers, y=v / max(v.sum(), 1), name=k) for k, v in counts.items()])
    layers.update_layout(
        barmode="group",
        height=300,
        margin=dict(l=0, r=0, t=30, b=0),
        yaxis_title="share of neurons",
        title="Which layers the removed neurons are in",
    )
    cols[1].plotly_chart(layers, config=CONFIG, key=f"{key}.layers")
    cost = go.Figure(
        [
            go.Scatter(
                x=res.n_neurons[kinds == k], y=(res.base_clean_acc - res.clean_acc)[kinds == k], mode="markers", name=k
            )
            for k in sorted(set(res.kind))
        ]
    )
    cost.update_layout(
        height=280,
        margin=dict(l=0, r=0, t=30, b=0),
        xaxis_title="neurons removed",
        yaxis_title="clean-train accuracy lost",
        title="What each flip cost",
    )
    st.plotly_chart(cost, config=CONFIG, key=f"{key}.cost")
    table = pd.DataFrame(
        {
            "training index": res.examples,
            "kind": res.kind,
            "label": [lm.classes[int(i)] for i in res.labels],
            "true label": [lm.classes[int(i)] for i in res.true_labels],
            "neurons": res.n_neurons,
            "stopped": res.stopped,
            "clean acc lost": res.base_clean_acc - res.clean_acc,
            "test acc lost": res.base_test_acc - res.test_acc,
            "neurons removed (layer:unit)": [" ".join(f"{res.layers[a]}:{u}" for a, u in ns) for ns in res.neurons],
        }
    )
    st.dataframe(table, hide_index=True)
    csv_button(table, "Neuron flipping", f"{key}.csv")


# ---------------------------------------------------------------------------------------------


def tied_dropout(lm: LoadedModel, key: str = "mem.td") -> None:
    st.caption(TEACHING["tied"])
    if not lm.arch.p_gen:
        train_offer(
            (TIED_PRESET,),
            f"{key}.offer",
            f"**{plain(lm.name)}** was trained without example-tied dropout. Train "
            "one (p_gen 0.5, p_mem 0.2, 10% noise; about a minute), or set p_gen and p_mem on the Models page:",
        )
        return
    reopen(f"{key}.job", "memorization_tied_dropout", lambda c: {})
    _run(
        key,
        "memorization_tied_dropout",
        lambda r: TiedDropoutConfig(model=r),
        lm,
        "example-tied dropout",
        "Compare kept and dropped",
        lambda res: show_tied(res, key),
    )


def show_tied(res, key: str) -> None:
    sets = ["memorized", "clean", "test"]
    fig = go.Figure(
        [
            go.Bar(
                x=sets,
                y=[res.kept[s] for s in sets],
                name="memorization neurons kept",
                text=[f"{res.kept[s]:.1%}" for s in sets],
                textposition="outside",
            ),
            go.Bar(
                x=sets,
                y=[res.dropped[s] for s in sets],
                name="dropped",
                text=[f"{res.dropped[s]:.1%}" for s in sets],
                textposition="outside",
            ),
        ]
    )
    fig.update_layout(
        barmode="group",
        height=340,
        margin=dict(l=0, r=0, t=30, b=0),
        yaxis=dict(range=[0, 1.12], title="accuracy"),
        title=f"p_gen {res.p_gen:g}, p_mem {res.p_mem:g}: {res.n_noisy} relabelled examples",
    )
    st.plotly_chart(fig, config=CONFIG, key=f"{key}.bar")
    st.caption(
        "Memorized: the relabelled training examples under their noisy labels, kept = with their own "
        "memorization neurons as in training. Test: kept = memorization neurons scaled by p_mem."
    )
    csv_button(
        pd.DataFrame({"set": sets, "kept": [res.kept[s] for s in sets], "dropped": [res.dropped[s] for s in sets]}),
        "Tied dropout",
        f"{key}.csv",
    )
