"""Can the maps be trusted? The BlockMNIST null-mass check, DiffROAR and model randomization."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from lenscape.analysis.roar import DiffRoarConfig
from lenscape.analysis.saliency import METHOD_LABELS, METHODS
from lenscape.analysis.sanity import MAP_MODES, MARGIN, ORDERS
from lenscape.backend.jobs import job, ref
from lenscape.backend.saliency_tasks import DiffRoarJobConfig, NullMassConfig, RandomizationConfig
from lenscape.backend.tasks import train_jobs
from lenscape.models.data import DataSpec
from lenscape.models.training import preset
from lenscape.models.zoo import LoadedModel
from lenscape.ui.common import (
    cached_data,
    eligible_runs,
    from_url,
    model_options,
    models_select,
    plain,
    run_safely,
    to_url,
)
from lenscape.ui.figures import CONFIG
from lenscape.ui.jobs import job_panel, reopen, submit
from lenscape.ui.saliency import method_form, method_widgets, model_widgets, pick_models
from lenscape.ui.saliency_figs import Display, attribution_grid, diffroar_curves, null_mass_boxes, rank_corr_curves
from lenscape.ui.url_widgets import comma, flag, flag_text, number_in, one_of, some_of, url_widget

ZOO = ("blockmnist-mlp", "blockmnist-mlp-robust", "blockmnist-cnn", "blockmnist-cnn-robust")
NULL_KS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)
ROAR_METHODS = tuple(m for m in METHODS if m not in ("random", "gradcam"))
ROAR_KS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9)


def blockmnist_check(key: str = "sal.block") -> None:
    reopen(
        f"{key}.job",
        "null_mass",
        lambda c: {
            f"{key}.top": DataSpec.from_dict(model_options()[c.models[0].run_id]["data"]).block_top_only,
            f"{key}.models": [r.run_id for r in c.models],
            **method_widgets(c.methods, f"{key}.form"),
            f"{key}.k": c.k_grid[0],
            f"{key}.n": c.n_images,
            f"{key}.k_shown": c.k_grid[0],
        },
    )
    top = url_widget(
        "block.top",
        f"{key}.top",
        lambda: st.toggle("BlockMNIST-Top (signal always on top)", key=f"{key}.top"),
        False,
        flag,
        flag_text,
    )
    spec = DataSpec(name="blockmnist", block_top_only=top)
    runs = eligible_runs(data=spec)
    with st.expander(f"Train the zoo: standard and L2-PGD MLP and CNN on {spec.label}", expanded=not runs):
        chosen = st.multiselect(
            "Recipes",
            ZOO,
            list(ZOO[:2]),
            key=f"{key}.zoo",
            help="The robust ones train with 7-step PGD, about 8x the time of the standard ones.",
        )
        if st.button("Train", key=f"{key}.train"):
            submit(
                f"{key}.train_jobs",
                [j for name in chosen for j in train_jobs(preset(name, data=spec), [0])],
                keep_replaced=True,
            )
    # outside the expander, which closes once models exist: the progress and the outcome stay in view
    job_panel(
        f"{key}.train_jobs",
        lambda recs: st.success(
            f"Trained {len(recs)} model{'s' * (len(recs) > 1)}: {plain(', '.join(r['name'] for r in recs))}. "
            f"{'They are' if len(recs) > 1 else 'It is'} picked below."
        ),
    )
    from_url("block.models", f"{key}.models", some_of(list(runs)))
    models = models_select(f"{key}.models", "Models", default=4, data=spec) if runs else []
    if runs:
        to_url("block.models", f"{key}.models", comma(m.run_id for m in models) or None)
    if not runs:
        st.info(f"No models trained on {spec.label} yet.")
    if not models:
        return
    c = st.columns([3, 2, 1])
    with c[0]:
        methods = method_form(models[0], f"{key}.form", default=("gradient",), allow_target=False, url="block.")
    k = url_widget(
        "block.k",
        f"{key}.k",
        lambda: c[1].select_slider(
            "k (top share of coordinates)", NULL_KS, 0.05, key=f"{key}.k", format_func=lambda v: f"{v:.0%}"
        ),
        0.05,
        one_of(NULL_KS),
    )
    n = url_widget(
        "block.n",
        f"{key}.n",
        lambda: c[2].number_input("Images", 10, 2000, 500, key=f"{key}.n"),
        500,
        number_in(10, 2000),
    )
    if not methods:
        return
    refs = tuple(ref(m) for m in models)
    cfg = NullMassConfig(models=refs, methods=methods, k_grid=(float(k),), n_images=int(n))
    if st.button("Compute null mass", type="primary", key=f"{key}.run"):
        submit(f"{key}.job", job("null_mass", cfg, refs, "BlockMNIST null mass"))
        st.session_state[f"{key}.k_shown"] = float(k)
    job_panel(f"{key}.job", lambda res: _show_null_mass(res[0], st.session_state[f"{key}.k_shown"], key))


def _show_null_mass(res, k: float, key: str) -> None:
    st.plotly_chart(
        null_mass_boxes(res.null_mass[:, :, 0], res.model_names, res.methods, res.null_share, k),
        config=CONFIG,
        key=f"{key}.boxes",
    )
    rows = [
        {
            "model": mname,
            "method": meth,
            "k": k,
            "mean": float(res.null_mass[i, j, 0].mean()),
            "std": float(res.null_mass[i, j, 0].std()),
        }
        for i, mname in enumerate(res.model_names)
        for j, meth in enumerate(res.methods)
    ]
    st.dataframe(pd.DataFrame(rows), hide_index=True)
    st.download_button(
        "Null mass per model and method (.csv)",
        pd.DataFrame(rows).to_csv(index=False),
        "null_mass.csv",
        key=f"{key}.csv",
    )
    st.markdown(
        "**Example maps**: the first test images, each map normalized as Captum does (absolute value, "
        "top 2% clipped), the signal block outlined in green. A map that explains the model puts its mass "
        "inside the box."
    )
    images = res.example_images
    cells = [
        [res.examples[mi, j, e] for mi in range(len(res.model_names)) for j in range(len(res.methods))]
        for e in range(len(images))
    ]
    outlines = [(0, 28) if t else (28, 56) for t in res.example_signal_top]
    short = [n.split(" · ", 1)[-1] for n in res.model_names]  # the data set is the same for all: drop it
    cols = [f"{s} · {METHOD_LABELS.get(m, m)}" if len(res.methods) > 1 else s for s in short for m in res.methods]
    titles = [f"#{e} · signal {'top' if t else 'bottom'}" for e, t in enumerate(res.example_signal_top)]
    st.plotly_chart(
        attribution_grid(
            images, cells, titles, cols, Display(mode="heat map"), cell=120, outlines=outlines, group=len(res.methods)
        ),
        config=CONFIG,
        key=f"{key}.examples",
        width="content",
    )


def diffroar(key: str = "sal.roar") -> None:
    reopen(
        f"{key}.job",
        "diffroar",
        lambda c: {
            **model_widgets(c.model.run_id),
            f"{key}.methods": [m for m in c.roar.methods if m != "random"],
            f"{key}.k": list(c.roar.k_grid),
            f"{key}.seeds": len(c.roar.seeds),
            f"{key}.epochs": c.roar.epochs,
            f"{key}.subset": c.roar.train_subset,
        },
    )
    models = pick_models("sal", compare=False)
    if models:
        _diffroar(models[0], key)


def _diffroar(lm: LoadedModel, key: str) -> None:
    if not lm.record.get("config"):
        st.warning("DiffROAR retrains the model's own recipe, so it needs a model trained in Lenscape.")
        return
    c = st.columns([3, 3, 1, 1, 1])
    methods = url_widget(
        "roar.methods",
        f"{key}.methods",
        lambda: c[0].multiselect(
            "Methods (Random is always added)",
            ROAR_METHODS,
            ["gradient"],
            key=f"{key}.methods",
            format_func=METHOD_LABELS.get,
        ),
        ["gradient"],
        some_of(ROAR_METHODS),
        comma,
    )
    ks = url_widget(
        "roar.k",
        f"{key}.k",
        lambda: c[1].multiselect(
            "k: fractions of coordinates kept",
            ROAR_KS,
            [0.05, 0.1, 0.2, 0.5],
            key=f"{key}.k",
            format_func=lambda v: f"{v:.0%}",
        ),
        [0.05, 0.1, 0.2, 0.5],
        some_of(ROAR_KS),
        comma,
    )
    seeds = url_widget(
        "roar.seeds",
        f"{key}.seeds",
        lambda: c[2].number_input("Seeds", 1, 5, 2, key=f"{key}.seeds"),
        2,
        number_in(1, 5),
    )
    epochs = url_widget(
        "roar.epochs",
        f"{key}.epochs",
        lambda: c[3].number_input("Epochs", 1, 50, 2, key=f"{key}.epochs"),
        2,
        number_in(1, 50),
    )
    subset = url_widget(
        "roar.subset",
        f"{key}.subset",
        lambda: c[4].number_input("Train subset", 0, 100000, 10000, key=f"{key}.subset", help="0 = all"),
        10000,
        number_in(0, 100000),
    )
    roar = run_safely(
        lambda: DiffRoarConfig(
            methods=tuple(methods),
            k_grid=tuple(sorted(ks)),
            seeds=tuple(range(int(seeds))),
            epochs=int(epochs),
            train_subset=int(subset),
        ),
        "DiffROAR settings",
    )
    if roar is None:
        return
    st.info(
        f"This will train **{roar.n_trainings}** models ({len(roar.all_methods)} methods × {len(roar.k_grid)} k "
        f"× {len(roar.seeds)} seeds × 2 arms), each for {roar.epochs} epochs of {plain(lm.name)}'s recipe."
    )
    if st.button("Run DiffROAR", type="primary", key=f"{key}.run"):
        r = ref(lm)
        submit(
            f"{key}.job",
            job("diffroar", DiffRoarJobConfig(model=r, roar=roar), (r,), f"DiffROAR of {lm.name}"),
            keep_replaced=True,
        )
    job_panel(f"{key}.job", lambda res: _show_roar(res[0], key))


def _show_roar(res, key: str) -> None:
    st.plotly_chart(
        diffroar_curves(res.k_grid, res.methods, res.diff_mean, res.diff_std), config=CONFIG, key=f"{key}.curves"
    )
    rows = [
        {
            "method": m,
            "k": float(k),
            "DiffROAR mean": float(res.diff_mean[i, j]),
            "DiffROAR std": float(res.diff_std[i, j]),
            "acc top-k": float(res.acc_top[i, j].mean()),
            "acc bottom-k": float(res.acc_bottom[i, j].mean()),
        }
        for i, m in enumerate(res.methods)
        for j, k in enumerate(res.k_grid)
    ]
    st.download_button(
        "DiffROAR table (.csv)", pd.DataFrame(rows).to_csv(index=False), "diffroar.csv", key=f"{key}.csv"
    )


def randomization(key: str = "sal.rand") -> None:
    reopen(
        f"{key}.job",
        "randomization",
        lambda c: {
            **model_widgets(c.model.run_id),
            **method_widgets(c.methods, f"{key}.form"),
            f"{key}.n": len(c.indices),
            f"{key}.order": c.order,
            f"{key}.mapmode": c.map_mode,
        },
    )
    models = pick_models("sal", compare=False)
    if models:
        _randomization(models[0], key)


def _randomization(lm: LoadedModel, key: str) -> None:
    c = st.columns([4, 1])
    with c[0]:
        methods = method_form(
            lm,
            f"{key}.form",
            default=("gradient", "guided_backprop", "integrated_gradients"),
            allow_target=False,
            url="rand.",
        )
    n = url_widget(
        "rand.n",
        f"{key}.n",
        lambda: c[1].number_input(
            "Images", 2, 32, 4, key=f"{key}.n", help="At least 2: maps of different images are one of the baselines."
        ),
        4,
        number_in(2, 32),
    )
    c = st.columns(2)
    order = url_widget(
        "rand.order",
        f"{key}.order",
        lambda: c[0].radio(
            "Order",
            ORDERS,
            horizontal=True,
            key=f"{key}.order",
            format_func={
                "cascading": "cascading (top layer, then the top two, ...)",
                "independent": "independent (one layer at a time)",
            }.get,
        ),
        ORDERS[0],
        one_of(ORDERS),
    )
    map_mode = url_widget(
        "rand.maps",
        f"{key}.mapmode",
        lambda: c[1].radio(
            "Maps compared",
            MAP_MODES,
            horizontal=True,
            key=f"{key}.mapmode",
            format_func={"abs": "absolute values", "signed": "signed values"}.get,
        ),
        MAP_MODES[0],
        one_of(MAP_MODES),
    )
    if not methods:
        return
    r = ref(lm)
    cfg = run_safely(
        lambda: RandomizationConfig(
            model=r, indices=tuple(range(int(n))), methods=methods, order=order, map_mode=map_mode
        ),
        "Randomization settings",
    )
    if cfg and st.button("Run the randomization check", type="primary", key=f"{key}.run"):
        submit(f"{key}.job", job("randomization", cfg, (r,), f"randomization of {lm.name}"))
    job_panel(f"{key}.job", lambda res: _show_randomization(lm, res[0], key))


def _show_randomization(lm: LoadedModel, results, key: str) -> None:
    for res in results:
        name, end = (
            METHOD_LABELS[res.method],
            (
                "with every layer re-initialized"
                if res.order == "cascading"
                else "whichever single layer is re-initialized"
            ),
        )
        verdict = (
            f"**{name}**: {end}, its maps keep a rank correlation of {res.least_changed:.2f} with the "
            f"original; maps of two *different* images under the trained model correlate at {res.floor:.2f}, "
            f"and two random networks' maps at {res.random_level:.2f}."
        )
        if res.flagged:
            input_driven = (
                " Two random networks agree this much too: the input, not any weights, shapes these maps "
                '(IG from a black baseline is zero wherever the image is black; see "Why mostly-zero '
                'maps score ρ near 1" above).'
                if res.random_level > 0.8
                else ""
            )
            st.warning(
                verdict + f" That is above {res.bar:.2f} (the different-images level, or 0 if it is "
                f"negative, plus {MARGIN}): the maps do not depend on what the model learned, so they do not "
                "explain it." + input_driven
            )
        else:
            st.success(
                verdict + " The randomized maps are no more alike than unrelated maps: the method "
                "depends on the weights."
            )
    st.plotly_chart(rank_corr_curves(results), config=CONFIG, key=f"{key}.curves")
    st.caption(
        "Dotted: maps of different images under the trained model (what unrelated maps share). Dashed: "
        "the same image under two independently randomized networks (what the input and architecture "
        "alone give). Ranks of tied values are averaged; a constant map has no ranking and is left out."
    )
    image = cached_data(lm.data, "test").x([0]).numpy()
    prefix = "+" if results[0].order == "cascading" else "only "
    cols = ["original", *[f"{prefix}{name}" for name in results[0].layers]]
    st.markdown(
        "**Map strips** (first image; each column re-initializes "
        f"{'one more layer' if results[0].order == 'cascading' else 'one layer'})"
    )
    signed = results[0].map_mode == "signed"
    cells = [[res.maps[s, 0][None] for s in range(len(cols))] for res in results]
    st.plotly_chart(
        attribution_grid(
            image.repeat(len(results), 0),
            cells,
            [METHOD_LABELS[r.method] for r in results],
            cols,
            Display(sign="all" if signed else "absolute_value", mode="heat map"),
            cell=120,
        ),
        config=CONFIG,
        key=f"{key}.strips",
        width="content",
    )
    rows = [
        {
            "method": res.method,
            "order": res.order,
            "maps": res.map_mode,
            "layer": layer,
            "mean rank correlation": float(mean),
            "different images": res.floor,
            "two random networks": res.random_level,
            "flagged": bool(res.flagged),
        }
        for res in results
        for layer, mean in zip(res.layers, res.layer_means)
    ]
    st.download_button(
        "Randomization check (.csv)", pd.DataFrame(rows).to_csv(index=False), "randomization.csv", key=f"{key}.csv"
    )
