"""Home's class demo: a button that prepares the demo's models and results (backend/teaching.py),
then a guided tour, one view per step, each shown from the stored result with a few sentences
for the class and a link into the view, where the same result is waiting."""

from __future__ import annotations

import streamlit as st

from lenscape.backend.tasks import train_jobs
from lenscape.backend.teaching import STEPS, missing, tour_jobs, train_configs, view_jobs
from lenscape.models.training import run_id_for
from lenscape.ui.common import MODEL_KEY, adopt_model, cached_model
from lenscape.ui.jobs import job_panel, submit


# measured from Home's button in a fresh workspace on this project's 2-core test machine (the one-click
# test in tests/pages/test_tour.py prints it): training the three models takes most of it, the five
# results a few seconds
PREPARE_SECONDS = 25


@st.cache_resource(show_spinner=False, max_entries=4)
def _jobs(fingerprints: tuple[str, ...]):
    """The tour's jobs for these exact models (the fingerprints key the cache)."""
    return tour_jobs()


@st.cache_resource(show_spinner=False, max_entries=4)
def _view_jobs(fingerprint: str):
    return view_jobs()


def _models():
    from lenscape.models.zoo import get_run

    recs = [get_run(run_id_for(c)) for c in train_configs()]
    return [cached_model(r["run_id"], None, r["checkpoints"][-1]["fingerprint"]) for r in recs]


def class_demo(key: str = "tour") -> None:
    st.subheader("Class demo: a guided tour")
    todo = missing()
    if todo:
        st.markdown(
            f"Three small models on the built-in digits, and one result per view computed ahead, so a "
            f"class sees pictures instead of progress bars. About {PREPARE_SECONDS} seconds on a 2-core CPU "
            "(or beforehand: `lenscape warm --preset teaching`)."
        )
        if st.button("Prepare the class demo", type="primary", key=f"{key}.prepare"):
            submit(f"{key}.train", [j for c in todo for j in train_jobs(c, [c.seed])], keep_replaced=True)
        job_panel(f"{key}.train", lambda recs: st.rerun())
        return
    labels = {s.key: s.title for s in STEPS}
    step_key = st.radio(
        "Step", list(labels), format_func=labels.get, horizontal=True, key=f"{key}.step", label_visibility="collapsed"
    )
    step = next(s for s in STEPS if s.key == step_key)
    st.markdown(step.text)
    seed0, seed1, noisy = _models()
    if not st.session_state.get(MODEL_KEY):  # the sidebar's model and data set follow the demo's
        adopt_model(seed0.record)
    jobs = _jobs((seed0.fingerprint, seed1.fingerprint, noisy.fingerprint))
    for other in STEPS:  # every step computed ahead (a few seconds in all), not only the one shown
        if other.key != step.key:
            submit(f"{key}.{other.key}", jobs[other.key])
    submit(f"{key}.views", _view_jobs(seed0.fingerprint))  # and what the views' links need to open at once
    submit(f"{key}.{step.key}", jobs[step.key])
    job_panel(f"{key}.{step.key}", lambda res: _show(step.key, res, seed0, noisy, jobs, f"{key}.{step.key}.view"))
    model = noisy if step.key == "memorization" else seed0
    view = step.page.split("_", 1)[-1].removesuffix(".py").replace("_", " ")
    # the view opens on this very result, every widget set as it produced it (ui.jobs.reopen)
    st.page_link(
        step.page,
        label=f"Explore this in the {view} view",
        icon=":material/arrow_forward:",
        query_params={"model": model.run_id, "job": jobs[step.key].key(), **({"open": step.tab} if step.tab else {})},
    )


def _show(key: str, res: list, seed0, noisy, jobs, wkey: str) -> None:
    if key == "saliency":
        from lenscape.ui.saliency import _draw_grid
        from lenscape.ui.saliency_figs import Display

        cfg = jobs["saliency"].config
        _draw_grid([seed0], cfg.split, cfg.indices, res, Display(), wkey)
    elif key == "similarity":
        from lenscape.ui.similarity import _show_matrix

        _show_matrix(res[0], wkey)
    elif key == "level_sets":
        from lenscape.ui.level_sets import show_all

        show_all(res, [(seed0.name, seed0.classes)], wkey)
    elif key == "landscape":
        from lenscape.analysis.landscape import batchnorm_layers
        from lenscape.ui.landscape import _show_interpolation

        _show_interpolation(res[0], wkey, bool(batchnorm_layers(seed0.model)))
    else:
        from lenscape.ui.memorization import show_overview

        show_overview(noisy, res[0], wkey)
