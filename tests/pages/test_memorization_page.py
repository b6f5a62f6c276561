"""The Memorization page: a model without label noise is explained and a noisy one offered; on a
noisy digits MLP every tab runs its experiment and draws it."""

from streamlit.testing.v1 import AppTest

from apphelpers import ROOT, open_tab, run_until

PAGE = str(ROOT / "pages" / "4_Memorization.py")


def test_a_model_without_label_noise_is_explained_and_a_noisy_one_offered(trained_run):
    (rec,) = trained_run("digits-mlp", epochs=2)
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.query_params["model"] = rec["run_id"]
    at.run()
    assert not at.exception
    assert any("nothing memorized to analyse" in i.value for i in at.info)
    labels = [b.label for b in at.button]
    assert any("10% noise" in b for b in labels)
    assert not at.tabs                                                  # no experiment without noise


def test_every_experiment_runs_on_a_noisy_model(trained_run):
    (rec,) = trained_run("digits-mlp", label_noise=0.1, epochs=12)
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.query_params["model"] = rec["run_id"]
    at.run()
    at.button(key="mem.ov.run").click().run()
    run_until(at, lambda a: any(m.label == "Memorized" for m in a.metric))
    assert next(m for m in at.metric if m.label == "Noise rate").value == "10%"
    checks = {"Gradients": ("mem.gr", "Gradient accounting (.csv)"), "Rewinding": ("mem.rw", "Layer rewinding (.csv)"),
              "Retraining": ("mem.rt", "Retraining (.csv)"), "Neuron flipping": ("mem.fl", "Neuron flipping (.csv)")}
    for tab, (key, download) in checks.items():
        open_tab(at, tab)
        if key == "mem.rt":
            at.number_input(key="mem.rt.epochs").set_value(2).run()
        if key == "mem.fl":
            at.number_input(key="mem.fl.nmem").set_value(4).run()
            at.number_input(key="mem.fl.nclean").set_value(4).run()
            at.number_input(key="mem.fl.cap").set_value(15).run()
        at.button(key=f"{key}.run").click().run()
        run_until(at, lambda a: any(d.label == download for d in a.get("download_button")), timeout=180)
        assert not at.exception and not at.error, (tab, [e.value for e in at.error])
    assert any(m.label.startswith("Median neurons to flip: memorized") for m in at.metric)
    open_tab(at, "Tied dropout")
    assert any("without example-tied dropout" in i.value for i in at.info)
