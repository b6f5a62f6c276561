"""The Level-sets page on a digits CNN: pick a source and targets, run, see the results."""

from streamlit.testing.v1 import AppTest

from apphelpers import ROOT, run_until

PAGE = str(ROOT / "pages" / "3_Level_sets.py")


def test_without_models_the_page_says_what_to_do():
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception and any("No models yet" in i.value for i in at.info)


def test_a_traversal_runs_and_shows_its_results(trained_run):
    trained_run("digits-cnn", epochs=8)
    at = AppTest.from_file(PAGE, default_timeout=120).run()
    run_until(at, lambda a: any("p0 =" in c.value for c in a.caption))      # predictions, then the pair
    at.multiselect(key="lst.targets.0").set_value([1, 2]).run()
    at.number_input(key="lst.T.argparse defaults (η 0.05, T 100, δ 0.05)").set_value(20).run()
    at.button(key="lst.run").click().run()
    run_until(at, lambda a: any(b.label == "Path and metrics (.npz)" for b in a.get("download_button")))
    assert any("Outputs" in m.value for m in at.markdown)
    assert len(at.dataframe) == 1 and len(at.dataframe[0].value) == 1        # one triangle for two outputs
    assert not at.exception and not at.error
