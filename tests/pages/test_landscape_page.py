"""The Loss-landscape page on a digits MLP: each tab computes and draws, with exports."""

from streamlit.testing.v1 import AppTest

from apphelpers import ROOT, open_tab, run_until

PAGE = str(ROOT / "pages" / "6_Loss_landscape.py")


def test_without_models_the_page_says_what_to_do():
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception and any("No models yet" in i.value for i in at.info)


def _downloads(at):
    return [b.label for b in at.get("download_button")]


def test_every_tab_computes_and_draws(trained_run):
    trained_run("digits-mlp", epochs=4)
    at = AppTest.from_file(PAGE, default_timeout=120).run()
    assert not at.exception
    assert not any(c.key == "land.dirs.bn" for c in at.checkbox)          # an MLP has no BatchNorm statistics
    at.number_input(key="land.dirs.res.2").set_value(5)
    at.number_input(key="land.dirs.n").set_value(200).run()
    assert any("forward passes" in c.value for c in at.caption)          # the cost, before it runs
    at.button(key="land.dirs.run").click().run()
    run_until(at, lambda a: "Surface (.npz)" in _downloads(a))
    assert "Figure (.html)" in _downloads(at) and len(at.get("plotly_chart")) == 1
    at.radio(key="land.dirs.view").set_value("contour").run()
    assert not at.exception

    at.number_input(key="land.dirs.limit").set_value(10)
    at.number_input(key="land.dirs.res.2").set_value(201).run()
    assert any("over the limit" in w.value for w in at.warning) and at.button(key="land.dirs.run").disabled

    open_tab(at, "Interpolation")
    at.number_input(key="land.interp.points").set_value(5)
    at.number_input(key="land.interp.n").set_value(200).run()
    at.button(key="land.interp.run").click().run()
    run_until(at, lambda a: "Curves (.csv)" in _downloads(a))

    open_tab(at, "Trajectory")
    at.number_input(key="land.traj.res").set_value(4)
    at.number_input(key="land.traj.n").set_value(200).run()
    at.button(key="land.traj.run").click().run()
    run_until(at, lambda a: "Path (.csv)" in _downloads(a))
    assert any("1st PC" in c.proto.spec for c in at.get("plotly_chart"))   # explained variance in the axis

    open_tab(at, "Curvature")
    at.number_input(key="land.hess.iters").set_value(10)
    at.number_input(key="land.hess.n").set_value(100).run()
    at.button(key="land.hess.run").click().run()
    run_until(at, lambda a: "Eigenvalues (.csv)" in _downloads(a))
    assert any("λ1 =" in c.value for c in at.caption)
    assert any("Trace of the Hessian (Hutchinson" in c.value for c in at.caption)
    assert any("eigenvalue density (stochastic Lanczos quadrature" in c.value for c in at.caption)
    at.number_input(key="land.hess.map.res").set_value(2).run()
    at.button(key="land.hess.map.run").click().run()
    run_until(at, lambda a: any("At the model: λ_max" in c.value for c in a.caption))
    assert not at.exception and not at.error


def test_recomputed_batchnorm_statistics_are_drawn_beside_the_stored_ones(trained_run):
    trained_run("digits-cnn", epochs=1, batchnorm=True)
    at = AppTest.from_file(PAGE, default_timeout=120).run()
    at.number_input(key="land.dirs.res.2").set_value(3)
    at.number_input(key="land.dirs.n").set_value(100)
    at.checkbox(key="land.dirs.bn").check().run()
    at.button(key="land.dirs.run").click().run()
    run_until(at, lambda a: "Surface (.npz)" in _downloads(a))
    charts = [c.proto.spec for c in at.get("plotly_chart")]
    assert len(charts) == 2 and "recomputed at each point" in charts[1] and "stored BatchNorm" in charts[0]
    assert any("Why the two differ" in c.value for c in at.caption)

    open_tab(at, "Interpolation")
    at.number_input(key="land.interp.points").set_value(3)
    at.number_input(key="land.interp.n").set_value(100)
    at.checkbox(key="land.interp.bn").check().run()
    at.button(key="land.interp.run").click().run()
    run_until(at, lambda a: "Curves (.csv)" in _downloads(a))
    assert "recomputed BN statistics" in at.get("plotly_chart")[-1].proto.spec
    assert not at.exception and not at.error
