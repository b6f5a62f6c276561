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
    assert not any(c.key == "land.dirs.bn" for c in at.checkbox)  # an MLP has no BatchNorm statistics
    at.number_input(key="land.dirs.res.2").set_value(5)
    at.number_input(key="land.dirs.n").set_value(200).run()
    assert any("forward passes" in c.value for c in at.caption)  # the cost, before it runs
    at.button(key="land.dirs.run").click().run()
    run_until(at, lambda a: "Surface (.npz)" in _downloads(a))
    assert "Figure (.html)" in _downloads(at) and len(at.get("plotly_chart")) == 1
    at.radio(key="land.dirs.view").set_value("contour").run()
    assert not at.exception

    at.number_input(key="land.dirs.limit").set_value(10)
    at.number_input(key="land.dirs.n").set_value(0)  # all examples: 40,401 points × 10,000, whatever the CPU
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
    assert any("1st PC" in c.proto.spec for c in at.get("plotly_chart"))  # explained variance in the axis

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


def test_figures_mark_only_the_model_on_a_line_draw_planes_square_and_keep_labels_apart():
    import numpy as np

    from lenscape.analysis.landscape import Curve
    from lenscape.ui.landscape_figs import contour, curves, spaced

    xs = np.linspace(-1, 1, 21)
    line = curves(xs, None, Curve(alphas=xs, loss=xs**2, accuracy=1 - xs**2 / 2), marks=(0,))
    assert [s.x0 for s in line.layout.shapes] == [0]  # the model; no checkpoint at +1 on a line
    assert line.layout.yaxis2.dtick == 20  # round accuracy ticks, not 23.6 / 47.3
    plane = contour(xs, 3 * xs, np.zeros((21, 21)))
    assert plane.layout.yaxis.scaleanchor == "x" and plane.layout.yaxis.scaleratio == 1 / 3  # a square area
    # a path whose last checkpoints crowd the final model: those are named on hover only
    px_, py_ = np.array([-6.0, -2.0, -0.5, -0.2, -0.1, 0.0]), np.array([0.0, 1.2, 0.8, 0.2, 0.05, 0.0])
    assert spaced(px_, py_, 7.0, 1.6) == {0, 1, 2, 3, 5}
