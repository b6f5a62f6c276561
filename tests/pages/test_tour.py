"""The class demo: prepared from Home with one click (or `lenscape warm`), then a tour
whose every step is drawn from a stored result, and whose links open views on the same results."""

import time

from streamlit.testing.v1 import AppTest

from apphelpers import ROOT, ROOT_APP, run_until


def test_one_click_prepares_the_tour_and_every_step_draws():
    from lenscape.backend.teaching import STEPS, tour_jobs
    from lenscape.ui.jobs import backend

    at = AppTest.from_file(ROOT_APP, default_timeout=120).run()
    start = time.perf_counter()
    at.button(key="tour.prepare").click().run()
    run_until(at, lambda a: len(a.radio) and a.radio(key="tour.step") is not None, timeout=300)
    trained = time.perf_counter() - start
    # every step is computed ahead, while the class looks at the first one
    run_until(at, lambda a: all(backend().store.has_valid_result(j.key()) for j in tour_jobs().values()), timeout=300)
    print(
        f"\nclass demo: 1 click, {trained:.1f} s to train, {time.perf_counter() - start:.1f} s to every step's result"
    )
    for step in STEPS:
        at.radio(key="tour.step").set_value(step.key).run()
        run_until(at, lambda a: len(a.get("plotly_chart")) > 0, timeout=300)
        assert not at.exception and not at.error, (step.key, [e.value for e in at.error])
        assert step.text[:40] in " ".join(m.value for m in at.markdown)
        (link,) = [e.proto for e in at.get("page_link") if e.proto.label.startswith("Explore this in the")]
        assert link.page.endswith(step.page.split("_", 1)[-1].removesuffix(".py"))
        assert f"job={tour_jobs()[step.key].key()}" in link.query_string  # opens on this very result
    # every step's result is stored: a second visit computes nothing
    assert all(backend().store.has_valid_result(j.key()) for j in tour_jobs().values())


def test_warm_from_the_command_line_then_the_saliency_view_opens_on_the_stored_maps(class_demo, demo_home):
    """`lenscape warm --preset teaching` in an empty workspace (conftest's class_demo ran it once for the
    whole test run), then the views open on what it stored."""
    assert "the class demo is ready" in class_demo[1]
    from lenscape.backend.jobs import JobStatus
    from lenscape.backend.teaching import tour_jobs
    from lenscape.ui.jobs import backend

    jobs = tour_jobs()
    sal = AppTest.from_file(str(ROOT / "pages" / "2_Saliency.py"), default_timeout=120)
    sal.query_params["model"] = jobs["saliency"].config.model.run_id
    sal.run()
    run_until(sal, lambda a: "sal.browse.jobs" in a.session_state)
    # the Maps tab's default job is the tour's: found stored at once, not computed again
    assert sal.session_state["sal.browse.jobs"] == [jobs["saliency"].key()]
    assert backend().status(jobs["saliency"].key()) == JobStatus.DONE

    # the Level sets page's default source, targets and settings are the tour's
    lst = AppTest.from_file(str(ROOT / "pages" / "3_Level_sets.py"), default_timeout=120)
    lst.query_params["model"] = jobs["level_sets"].config.model.run_id
    lst.run()
    run_until(lst, lambda a: any(b.key == "lst.run" for b in a.button))
    lst.button(key="lst.run").click().run()
    assert lst.session_state["lst.job"] == [jobs["level_sets"].key()]
    assert backend().status(jobs["level_sets"].key()) == JobStatus.DONE


def test_each_step_s_link_opens_its_view_on_the_same_result(demo_home):
    """ "Explore this in the … view" opens every step's view with the step's stored result shown and
    nothing submitted (the link names the job: ?job=), in a copy of the warmed demo's workspace
    (warming again there computes nothing)."""
    from lenscape.backend.jobs import JobStatus
    from lenscape.backend.teaching import STEPS, tour_jobs, warm
    from lenscape.ui.jobs import backend

    stored = {r["id"]: r["status"] for r in backend().store.list()}
    assert set(stored.values()) == {JobStatus.DONE.value}
    warm(backend(), say=lambda m: None)
    assert {r["id"]: r["status"] for r in backend().store.list()} == stored  # nothing trained or computed again
    jobs = tour_jobs()
    home = AppTest.from_file(ROOT_APP, default_timeout=120).run()
    for step in STEPS:
        home.radio(key="tour.step").set_value(step.key).run()
        (link,) = [e.proto for e in home.get("page_link") if e.proto.label.startswith("Explore this in the")]
        before = {r["id"]: r["status"] for r in backend().store.list()}
        view = AppTest.from_file(ROOT_APP, default_timeout=120)
        for part in link.query_string.split("&"):
            k, _, v = part.partition("=")
            view.query_params[k] = v.replace("+", " ")
        view.switch_page(step.page).run()
        assert not view.exception and not view.error, (step.key, [e.value for e in view.error])
        state = view._session_state.filtered_state
        shown = [k for k, v in state.items() if k.endswith((".job", ".jobs")) and v == [jobs[step.key].key()]]
        assert shown, (step.key, {k: v for k, v in state.items() if k.endswith((".job", ".jobs"))})
        assert {r["id"]: r["status"] for r in backend().store.list()} == before, step.key
