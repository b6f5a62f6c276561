from streamlit.testing.v1 import AppTest

from apphelpers import ROOT, open_tab, run_until

PAGE = str(ROOT / "pages" / "5_Similarity.py")


def test_without_models_the_page_says_what_to_do():
    at = AppTest.from_file(PAGE, default_timeout=60).run()
    assert not at.exception and any("No models yet" in i.value for i in at.info)


def test_layer_heatmap_seed_matrix_metrics_and_pca_projection(trained_run):
    trained_run("digits-mlp", seeds=(0, 1), epochs=5)
    at = AppTest.from_file(PAGE, default_timeout=120).run()
    assert not at.exception
    at.number_input(key="sim.layers.n").set_value(300)
    at.button(key="sim.layers.run").click().run()
    run_until(at, lambda a: any(b.label == "Matrix (.csv)" for b in a.get("download_button")))
    open_tab(at, "All metrics")
    at.button(key="sim.pair.run").click().run()
    run_until(at, lambda a: len(a.dataframe) > 0)
    table = at.dataframe[0].value
    assert list(table.metric) == ["Linear CKA", "RBF CKA", "Debiased CKA", "CCA (mean ρ)", "SVCCA", "PWCCA"]
    assert table["beats baselines"].iloc[:3].all(), table  # CKA; CCA variants are noisy on 360 digits
    open_tab(at, "Projection")
    at.radio(key="sim.proj.method").set_value("pca").run()
    at.button(key="sim.proj.run").click().run()
    run_until(at, lambda a: any(b.label == "Coordinates (.csv)" for b in a.get("download_button")))
    assert not at.exception and not at.error


def test_shorten_keeps_what_differs():
    from lenscape.ui.similarity import shorten

    short, shared = shorten(["Digits · MLP 128 · seed 0: relu1", "Digits · MLP 128 · seed 1: relu1"])
    assert short == ["seed 0: relu1", "seed 1: relu1"] and shared == "Digits · MLP 128"
    assert shorten(["a · b", "c · b"]) == (["a · b", "c · b"], "")
    assert shorten(["same · x", "same · x"]) == (["x", "x"], "same")  # one part is always kept


def test_seeds_tab_refuses_models_of_different_data_sets(trained_run):
    from lenscape.models.architectures import ArchSpec, build_model
    from lenscape.models.data import DataSpec
    from lenscape.models.zoo import import_model

    trained_run("digits-mlp", seeds=(0, 1), epochs=5)
    arch = ArchSpec(name="mlp", in_shape=(1, 28, 28), num_classes=10, mean=(0.13,), std=(0.31,), widths=(16,))
    import_model(build_model(arch), arch, "mnist stranger", DataSpec(name="mnist"), tuple("0123456789"), "test")
    at = AppTest.from_file(PAGE, default_timeout=120).run()
    assert not at.exception
    open_tab(at, "Seeds (N × N)")
    seeds = at.multiselect(key="sim.seeds.models")
    assert len(seeds.value) == 1  # the default holds models of one data set: the newest model only here
    from lenscape.models.zoo import list_runs

    other = next(r["run_id"] for r in list_runs() if r["run_id"] not in seeds.value)
    at.multiselect(key="sim.seeds.models").set_value([*seeds.value, other])
    at.run()
    assert any("different data sets" in e.value for e in at.error)
    assert not at.exception


def test_layer_pickers_follow_the_model_when_it_changes(trained_run):
    (mlp,), (cnn,) = ([r["run_id"] for r in trained_run(name, epochs=2)] for name in ("digits-mlp", "digits-cnn"))
    at = open_tab(AppTest.from_file(PAGE, default_timeout=120).run(), "Over training")
    at.selectbox(key="sim.train.model").set_value(mlp).run()
    assert at.multiselect(key=f"sim.train.layers.{mlp}").value == ["relu1", "out"]
    at.selectbox(key="sim.train.model").set_value(cnn).run()
    assert at.multiselect(key=f"sim.train.layers.{cnn}").value == ["relu1", "relu2", "relu3", "fc2"]
    open_tab(at, "Layers × layers")
    at.selectbox(key="sim.layers.a").set_value(mlp).run()
    at.selectbox(key="sim.layers.a").set_value(cnn).run()
    assert at.multiselect(key=f"sim.layers.la.{cnn}").value == ["relu1", "relu2", "relu3", "fc2"]
    assert not at.exception
