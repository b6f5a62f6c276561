"""The Runs page: every model and every stored result of the workspace, with filters, tags,
multi-delete, training curves overlaid, reopening a result in its view, and reproducibility
bundles (backend/bundles.py) to export and import."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from lenscape.models.checkpoints import read_json, write_json
from lenscape.errors import InvalidInputError
from lenscape.models.paths import home_dir, runs_dir
from lenscape.models.zoo import delete_run, list_runs
from lenscape.ui.common import backend, model_row, plain, plot_text, run_safely, timestamp
from lenscape.ui.figures import CONFIG
from lenscape.ui.summary import test_accuracy

# kind → (page, tab) where its result is shown; the page finds the stored result when it submits the
# same job again
VIEWS = {
    "saliency": ("pages/2_Saliency.py", "Maps"),
    "null_mass": ("pages/2_Saliency.py", "BlockMNIST check"),
    "diffroar": ("pages/2_Saliency.py", "DiffROAR"),
    "randomization": ("pages/2_Saliency.py", "Randomization check"),
    "level_set_traversal": ("pages/3_Level_sets.py", None),
    "memorization_overview": ("pages/4_Memorization.py", "Overview"),
    "memorization_gradients": ("pages/4_Memorization.py", "Gradients"),
    "memorization_rewinding": ("pages/4_Memorization.py", "Rewinding"),
    "memorization_retraining": ("pages/4_Memorization.py", "Retraining"),
    "memorization_flipping": ("pages/4_Memorization.py", "Neuron flipping"),
    "memorization_tied_dropout": ("pages/4_Memorization.py", "Tied dropout"),
    "layer_similarity": ("pages/5_Similarity.py", "Layers × layers"),
    "seed_similarity": ("pages/5_Similarity.py", "Seeds (N × N)"),
    "convergence": ("pages/5_Similarity.py", "Over training"),
    "all_metrics": ("pages/5_Similarity.py", "All metrics"),
    "projection": ("pages/5_Similarity.py", "Projection"),
    "landscape_surface": ("pages/6_Loss_landscape.py", "Random directions"),
    "landscape_interpolation": ("pages/6_Loss_landscape.py", "Interpolation"),
    "landscape_trajectory": ("pages/6_Loss_landscape.py", "Trajectory"),
    "landscape_hessian": ("pages/6_Loss_landscape.py", "Curvature"),
    "landscape_convexity": ("pages/6_Loss_landscape.py", "Curvature"),
    "train": ("pages/1_Models.py", "Workspace models"),
    "model_summary": ("pages/1_Models.py", "Workspace models"),
}


# ---------------------------------------------------------------------------------------------
# Tags: {model run id or job id: [tag, ...]} in the workspace


def _tags_file() -> Path:
    return home_dir() / "tags.json"


def load_tags() -> dict[str, list[str]]:
    path = _tags_file()
    return read_json(path) if path.exists() else {}


def add_tags(ids: list[str], text: str) -> None:
    tags = load_tags()
    new = [t.strip() for t in text.split(",") if t.strip()]
    for i in ids:
        tags[i] = sorted(set(tags.get(i, [])) | set(new))
    write_json(_tags_file(), tags)


def remove_tags(ids: list[str]) -> None:
    tags = load_tags()
    write_json(_tags_file(), {k: v for k, v in tags.items() if k not in ids})


# ---------------------------------------------------------------------------------------------


def _folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def model_rows(runs: list[dict], tags: dict[str, list[str]]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                **model_row(r),
                "test acc": test_accuracy(r),
                "size (MB)": _folder_size(runs_dir() / r["run_id"]) / 2**20,
                "tags": ", ".join(tags.get(r["run_id"], [])),
            }
            for r in runs
        ]
    )


def result_rows(jobs: list[dict], names: dict[str, str], tags: dict[str, list[str]]) -> pd.DataFrame:
    runner = backend()
    rows = []
    for j in jobs:
        fps = json.loads(j["fingerprints"] or "[]")
        rows.append(
            {
                "result": j["label"] or j["kind"],
                "kind": j["kind"],
                "status": j["status"],
                "models": ", ".join(names.get(fp, f"(gone) {fp}") for fp in fps),
                "created": timestamp(j["created"]),
                "seconds": j["seconds"],
                "device": j["device"],
                "size (KB)": runner.stored_bytes(j["id"]) / 1024,
                "config": (j["config"] or "")[:160],
                "tags": ", ".join(tags.get(j["id"], [])),
                "job id": j["id"],
            }
        )
    return pd.DataFrame(rows)


def _selected(event, ids: list[str]) -> list[str]:
    """The ids of the rows ticked in a table that shows `ids`, in that order."""
    rows = event.selection.rows if event is not None else []
    return [ids[i] for i in rows if 0 <= i < len(ids)]


def _digest(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:16]


def _filter(frame: pd.DataFrame, text: str, tag: str) -> pd.DataFrame:
    if text:
        keep = frame.astype(str).apply(lambda col: col.str.contains(text, case=False, regex=False)).any(axis=1)
        frame = frame[keep]
    if tag:
        frame = frame[frame["tags"].str.split(", ").apply(lambda ts: tag in ts)]
    return frame.reset_index(drop=True)


def _table(
    frame: pd.DataFrame,
    key: str,
    what: str,
    placeholder: str,
    columns: dict[str, str],
    all_tags: list[str],
    id_col: str,
    config: dict,
) -> tuple[pd.DataFrame, list[str]]:
    """Filters (text, a multiselect per column in `columns`, a tag), the table with multi-row
    selection; (the rows shown, the ids of the selected ones).

    Streamlit reports a table's selection as row positions. The table's key is made of the filters,
    the ids it shows and a count of deletes, so any change to them starts a new table with nothing
    selected: ticks never move onto other rows (a cleared filter, a deleted row, a new model)."""
    c = st.columns([3, *[2] * (len(columns) + 1)])
    text = c[0].text_input(f"Filter {what}", key=f"{key}.text", placeholder=placeholder)
    shown, filters = frame, [text]
    for (col, label), cell in zip(columns.items(), c[1:]):
        chosen = cell.multiselect(label, sorted(frame[col].dropna().unique()), key=f"{key}.{col}", placeholder="all")
        filters.append(chosen)
        if chosen:
            shown = shown[shown[col].isin(chosen)]
    tag = c[-1].selectbox("Tag", ["", *all_tags], key=f"{key}.tag", format_func=lambda t: t or "any")
    shown = _filter(shown.reset_index(drop=True), text, tag)
    ids = shown[id_col].tolist()
    table = f"{key}.table.{_digest(filters, tag, ids, st.session_state.get(f'{key}.deletes', 0))}"
    event = st.dataframe(
        shown,
        hide_index=True,
        width="stretch",
        on_select="rerun",
        selection_mode="multi-row",
        key=table,
        column_config={**config, "created": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm")},
    )
    return shown, _selected(event, ids)


def models_section(key: str = "runs.models") -> None:
    runs, tags = list_runs(), load_tags()
    if not runs:
        st.info("No models yet: train or import one on the **Models** page.")
        return
    frame = model_rows(runs, tags)
    all_tags = sorted({t for r in runs for t in tags.get(r["run_id"], [])})
    shown, picked = _table(
        frame,
        key,
        "models",
        "any text: name, data set, architecture…",
        {"data set": "Data sets"},
        all_tags,
        "run id",
        {
            "test acc": st.column_config.NumberColumn(format="percent"),
            "size (MB)": st.column_config.NumberColumn(format="%.2f"),
        },
    )
    st.caption(f"{len(shown)} of {len(frame)} models · select rows to compare their training, tag or delete them")
    if not picked:
        return
    by_id = {r["run_id"]: r for r in runs}
    curves = [by_id[p] for p in picked if by_id[p].get("metrics")]
    if curves:
        st.plotly_chart(overlay_curves(curves), config=CONFIG, key=f"{key}.curves")
    _tag_or_delete(
        picked,
        {p: f"{by_id[p]['name']} ({p})" for p in picked},
        key,
        "model",
        " and their checkpoints",
        lambda run_id: run_safely(lambda: delete_run(run_id), f"Deleting {run_id}"),
    )


def overlay_curves(runs: list[dict]) -> go.Figure:
    """Test accuracy (solid) and training loss (dotted) per epoch of several runs on one chart."""
    fig = go.Figure()
    for r in runs:
        epochs = [m["epoch"] for m in r["metrics"]]
        fig.add_trace(
            go.Scatter(
                x=epochs,
                y=[m.get("test_acc") for m in r["metrics"]],
                name=plot_text(f"{r['name']}: test acc"),
                mode="lines+markers",
            )
        )
        fig.add_trace(
            go.Scatter(
                x=epochs,
                y=[m.get("train_loss") for m in r["metrics"]],
                name=plot_text(f"{r['name']}: train loss"),
                line=dict(dash="dot"),
                yaxis="y2",
            )
        )
    epochs = [m["epoch"] for r in runs for m in r["metrics"]]
    accuracy = [m.get("test_acc") for r in runs for m in r["metrics"]]
    fig.update_layout(
        height=360,
        margin=dict(l=0, r=0, t=30, b=0),
        title="Training curves of the selected models",
        xaxis=dict(title="epoch", **epoch_axis(epochs)),
        yaxis=dict(title="test accuracy", **percent_axis(accuracy)),
        # its own ticks: synced to the accuracy's grid they read 0.314, 0.858, 1.401
        yaxis2=dict(
            title="training loss",
            overlaying="y",
            side="right",
            tickmode="auto",
            nticks=6,
            showgrid=False,
            rangemode="tozero",
        ),
        legend=dict(orientation="h", y=-0.3),
    )
    return fig


def epoch_axis(epochs: list[int]) -> dict:
    """Whole epochs only: a tick per epoch over a short run (auto ticks read 1.5, 2.5)."""
    return dict(dtick=1, tick0=0) if epochs and max(epochs) - min(epochs) <= 12 else dict(tickformat="d")


def percent_axis(values: list[float | None]) -> dict:
    """A share axis in percent with as many decimals as the values' spread needs (accuracies of
    98.6-99.4% read '99% 99% 99% 99% 99%' with none); a single value gets a range of ±1 point."""
    import math

    shown = [v for v in values if v is not None]
    if not shown:
        return dict(tickformat=".0%")
    span = max(shown) - min(shown)
    if span < 1e-9:
        return dict(tickformat=".1%", range=[max(0.0, shown[0] - 0.01), min(1.0, shown[0] + 0.01) + 0.002])
    step = span * 100 / 4  # percentage points between about five ticks
    return dict(tickformat=f".{min(3, max(0, math.ceil(-math.log10(step))))}%")


def results_section(key: str = "runs.results") -> None:
    jobs = [j for j in backend().records() if j["kind"] not in ("predict", "prepare_data")]
    runs, tags = list_runs(), load_tags()
    names = {ck["fingerprint"]: f"{r['name']} @ {ck['epoch']}" for r in runs for ck in r.get("checkpoints", [])}
    if not jobs:
        st.info("No stored results yet: every view's computations land here.")
        return
    frame = result_rows(jobs, names, tags)
    all_tags = sorted({t for j in jobs for t in tags.get(j["id"], [])})
    shown, picked = _table(
        frame,
        key,
        "results",
        "any text: label, model, config…",
        {"kind": "Kinds", "status": "Status"},
        all_tags,
        "job id",
        {
            "seconds": st.column_config.NumberColumn(format="%.1f"),
            "size (KB)": st.column_config.NumberColumn(format="%.0f"),
        },
    )
    st.caption(f"{len(shown)} of {len(frame)} results · select one to reopen or export it, several to tag or delete")
    if not picked:
        return
    if len(picked) == 1:
        job_id = picked[0]
        row = backend().record(job_id)
        c = st.columns(3)
        link = reopen_link(row)
        if link:
            page, params = link
            c[0].page_link(page, label="Reopen in its view", icon=":material/open_in_new:", query_params=params)
        if row["status"] == "DONE":
            c[1].download_button(
                "Reproducibility bundle (.zip)",
                lambda: backend().export_bundle(job_id),
                f"lenscape_{row['kind']}_{job_id}.zip",
                mime="application/zip",
                key=f"{key}.bundle",
            )
    labels = dict(zip(frame["job id"], frame["result"]))
    _tag_or_delete(picked, {p: f"{labels.get(p, p)} ({p})" for p in picked}, key, "result", "", backend().forget)


def _tag_or_delete(picked: list[str], names: dict[str, str], key: str, what: str, extra: str, delete) -> None:
    """Tag the selected rows, or delete them after a confirmation that names each of them (`names`:
    id → how to name it). The confirmation belongs to this very selection: another one asks again."""
    c = st.columns([3, 1])
    new = c[0].text_input("Tags for the selected (comma-separated)", key=f"{key}.newtags")
    if c[1].button("Tag", key=f"{key}.tagit", disabled=not new.strip()):
        add_tags(picked, new)
        st.rerun()
    n, plural = len(picked), "s" * (len(picked) > 1)
    these = "this" if n == 1 else f"these {n}"
    listed = "; ".join(plain(names[p]) for p in picked)
    with st.container(key=f"{key}.confirm"):
        sure = st.checkbox(f"Yes, delete {these} {what}{plural}{extra}: {listed}", key=f"{key}.sure.{_digest(picked)}")
        if st.button(f"Delete {these} {what}{plural}", key=f"{key}.delete", disabled=not sure, type="primary"):
            for i in picked:
                delete(i)
            remove_tags(picked)
            st.session_state[f"{key}.deletes"] = st.session_state.get(f"{key}.deletes", 0) + 1  # a fresh table
            st.rerun()


def reopen_link(row: dict) -> tuple[str, dict] | None:
    """(page, query parameters) that show a stored result in its view: `job` names it, and the view
    sets every widget from the stored job's config and shows the stored result (nothing is computed
    again); the model and tab are named too, for the page's first draw."""
    if row["kind"] not in VIEWS:
        return None
    page, tab = VIEWS[row["kind"]]
    cfg = json.loads(row["config"] or "{}")
    params = {"open": tab} if tab else {}
    model = cfg.get("model") or (cfg.get("models") or [None])[0]
    if isinstance(model, dict) and model.get("run_id"):
        params["model"] = model["run_id"]
    elif row["kind"] == "train":
        params = {"open": tab}
    if row.get("id") and row["kind"] != "train":
        params["job"] = row["id"]
    return page, params


def import_section(key: str = "runs.import") -> None:
    up = st.file_uploader(
        "Import a reproducibility bundle (.zip)",
        type=["zip"],
        key=f"{key}.file",
        help="Exported from the Results table of any Lenscape. The weights inside are read as "
        "safetensors only, and checked against their fingerprints before anything is written.",
    )
    if up is None:
        return
    done = st.session_state.get(f"{key}.done")
    if done and done[0] == up.file_id:
        manifest = done[1]
    else:
        try:
            manifest = backend().import_bundle(up.getvalue())
        except InvalidInputError as exc:
            st.error(f"Not imported: {plain(exc)}")
            return
        st.session_state[f"{key}.done"] = (up.file_id, manifest)
        st.rerun()  # the tables above list what was imported
    models = ", ".join(m["name"] for m in manifest["models"])  # names and labels from the bundle: as text
    st.success(
        f"Imported **{plain(manifest['label'] or manifest['kind'])}** ({plain(manifest['kind'])}, computed on "
        f"{plain(manifest['device'])} in {manifest['seconds'] or 0:.1f} s) with {plain(models or 'no model')}."
    )
    link = reopen_link({"kind": manifest["kind"], "config": json.dumps(manifest["config"]), "id": manifest["job_id"]})
    if link:
        st.page_link(link[0], label="Reopen it in its view", icon=":material/open_in_new:", query_params=link[1])
