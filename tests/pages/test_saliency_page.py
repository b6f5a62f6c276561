import os
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from apphelpers import ROOT, ROOT_APP, open_tab, run_until

# BlockMNIST is built from MNIST (LENSCAPE_DATA; tests/conftest.py points it at ../shared/data)
HAS_MNIST = (Path(os.environ.get("LENSCAPE_DATA", "")) / "MNIST" / "raw" / "train-images-idx3-ubyte").exists()

SALIENCY = str(ROOT / "pages" / "2_Saliency.py")


def test_saliency_page_without_models_says_what_to_do():
    at = AppTest.from_file(SALIENCY, default_timeout=60).run()
    assert not at.exception
    assert any("No models" in i.value for i in at.info)


def test_maps_grid_and_gradcam_on_an_mlp_is_explained(trained_run):
    trained_run("digits-mlp")
    at = AppTest.from_file(SALIENCY, default_timeout=60).run()
    at.multiselect(key="sal.browse.methods").set_value(["gradient", "gradcam", "occlusion"]).run()
    assert any("Grad-CAM does not apply" in w.value for w in at.warning)
    run_until(at, lambda a: len(a.get("download_button")) == 4)
    assert len(at.get("plotly_chart")) == 1
    assert not at.exception and not at.error
    assert [b.label for b in at.get("download_button")] == [
        "Grid (.png)",
        "Grid (.pdf)",
        "Attributions (.npz)",
        "Predictions (.csv)",
    ]


@pytest.mark.skipif(not HAS_MNIST, reason="BlockMNIST is built from MNIST: needs it in LENSCAPE_DATA")
def test_blockmnist_null_mass_for_standard_and_robust_mlps(trained_run):
    trained_run("blockmnist-mlp")
    trained_run("blockmnist-mlp-robust")
    at = open_tab(AppTest.from_file(SALIENCY, default_timeout=120).run(), "BlockMNIST check")
    assert len(at.multiselect(key="sal.block.models").value) == 2
    assert not [w for w in [*at.selectbox, *at.multiselect] if w.key.startswith("sal.primary") or w.key == "sal.others"]
    at.button(key="sal.block.run").click().run()
    run_until(at, lambda a: len(a.dataframe) > 0, timeout=180)
    table = at.dataframe[0].value
    standard = table[~table.model.str.contains("PGD")]["mean"].iloc[0]
    robust = table[table.model.str.contains("PGD")]["mean"].iloc[0]
    assert robust < standard / 3, table
    assert not at.exception


def test_randomization_check_judges_against_measured_baselines_in_both_orders(trained_run):
    trained_run("digits-mlp")
    at = open_tab(AppTest.from_file(SALIENCY, default_timeout=60).run(), "Randomization check")
    at.multiselect(key="sal.rand.form.methods").set_value(["gradient", "random"]).run()
    for order in ("cascading", "independent"):
        at.radio(key="sal.rand.order").set_value(order)
        at.radio(key="sal.rand.mapmode").set_value("signed").run()
        at.button(key="sal.rand.run").click().run()
        run_until(
            at,
            lambda a: (
                any("Random" in w.value for w in a.warning) and any("Gradient (logit)" in s.value for s in a.success)
            ),
            timeout=120,
        )
        verdicts = " ".join(x.value for x in [*at.warning, *at.success])
        assert "different* images" in verdicts and "two random networks" in verdicts
        assert not at.exception and not at.error


def test_the_maps_state_lives_in_the_address_bar(trained_run):
    (rec,) = trained_run("digits-mlp", epochs=2)
    at = AppTest.from_file(SALIENCY, default_timeout=60)
    for k, v in {
        "model": rec["run_id"],
        "tab": "Maps",
        "methods": "gradient,occlusion",
        "idx": "3,5",
        "sign": "all",
        "show": "heat map",
    }.items():
        at.query_params[k] = v
    at.run()
    run_until(at, lambda a: len(a.get("download_button")) == 4)
    assert at.multiselect(key="sal.browse.methods").value == ["gradient", "occlusion"]
    assert at.text_input(key="sal.browse.idx").value == "3,5"
    assert at.radio(key="sal.browse.sign").value == "all" and at.radio(key="sal.browse.mode").value == "heat map"
    assert not at.exception and not at.warning
    # changing a setting changes the link; defaults leave it out
    at.radio(key="sal.browse.sign").set_value("positive").run()
    at.multiselect(key="sal.browse.methods").set_value(list(("gradient", "integrated_gradients", "smoothgrad"))).run()
    assert at.query_params["sign"] == "positive" and "methods" not in at.query_params
    assert at.query_params["idx"] == "3,5" and at.query_params["model"] == rec["run_id"]


def _randomization_settings(at):
    return (
        at.number_input(key="sal.rand.n").value,
        at.radio(key="sal.rand.order").value,
        at.multiselect(key="sal.rand.form.methods").value,
    )


def test_a_closed_tab_and_another_page_keep_their_settings(trained_run, monkeypatch):
    """Only the open tab runs, and Streamlit forgets the values of widgets a run does not draw:
    ui.common.keep_widget_values keeps them, across tabs and pages."""
    trained_run("digits-mlp")

    def visit(at):
        at.switch_page("pages/2_Saliency.py").run()
        open_tab(at, "Randomization check")
        at.number_input(key="sal.rand.n").set_value(7)
        at.radio(key="sal.rand.order").set_value("independent")
        at.multiselect(key="sal.rand.form.methods").set_value(["gradient"]).run()
        open_tab(at, "Maps")  # the randomization widgets are not drawn
        at.switch_page("pages/1_Models.py").run()  # nor on another page
        at.switch_page("pages/2_Saliency.py").run()
        return open_tab(at, "Randomization check")

    at = visit(AppTest.from_file(ROOT_APP, default_timeout=120).run())
    assert not at.exception
    assert _randomization_settings(at) == (7, "independent", ["gradient"])
    # without it, Streamlit's defaults come back (the test can tell the difference)
    import lenscape.ui.common

    monkeypatch.setattr(lenscape.ui.common, "keep_widget_values", lambda: None)
    at = visit(AppTest.from_file(ROOT_APP, default_timeout=120).run())
    assert _randomization_settings(at) == (4, "cascading", ["gradient", "guided_backprop", "integrated_gradients"])
