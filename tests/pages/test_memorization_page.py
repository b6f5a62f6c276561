"""The Memorization page: a model without label noise is explained and a noisy one offered; on a
noisy digits MLP every tab runs its experiment and draws it."""

from streamlit.testing.v1 import AppTest

from apphelpers import ROOT, open_tab, run_until

PAGE = str(ROOT / "pages" / "4_Memorization.py")
SALIENCY = str(ROOT / "pages" / "2_Saliency.py")
SIMILARITY = str(ROOT / "pages" / "5_Similarity.py")


def test_a_model_without_label_noise_is_explained_and_a_noisy_one_offered(trained_run):
    (rec,) = trained_run("digits-mlp", epochs=2)
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.query_params["model"] = rec["run_id"]
    at.run()
    assert not at.exception
    assert any("nothing memorized to analyse" in i.value for i in at.info)
    labels = [b.label for b in at.button]
    assert any("10% noise" in b for b in labels)
    assert not at.tabs  # no experiment without noise


def test_the_offer_submits_the_training_of_its_recipe(trained_run):
    """The offer's button submits the noisy recipe's training job (cancelled here: a hundred epochs; the
    browser journey opens the class demo's copy of that model, trained by `lenscape warm`)."""
    from lenscape.backend.jobs import JobStatus
    from lenscape.backend.tasks import train_jobs
    from lenscape.models.training import preset
    from lenscape.ui.jobs import backend

    (rec,) = trained_run("digits-mlp", epochs=2)
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.query_params["model"] = rec["run_id"]
    at.run()
    at.button(key="mem.offer.digits-mlp-noise10").click().run()
    (job_id,) = at.session_state["mem.offer.jobs"]
    (expected,) = train_jobs(preset("digits-mlp-noise10"), [0])
    assert job_id == expected.key()  # the recipe the button names, seed 0
    assert backend().status(job_id) in (JobStatus.QUEUED, JobStatus.RUNNING)
    backend().cancel(job_id)
    assert backend().wait(job_id, 60) == JobStatus.CANCELLED
    assert not at.exception


def test_every_experiment_runs_on_a_noisy_model(trained_run):
    (rec,) = trained_run("digits-mlp", label_noise=0.1, epochs=12)
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.query_params["model"] = rec["run_id"]
    at.run()
    at.button(key="mem.ov.run").click().run()
    run_until(at, lambda a: any(m.label == "Memorized" for m in a.metric))
    assert next(m for m in at.metric if m.label == "Noise rate").value == "10%"
    checks = {
        "Gradients": ("mem.gr", "Gradient accounting (.csv)"),
        "Rewinding": ("mem.rw", "Layer rewinding (.csv)"),
        "Retraining": ("mem.rt", "Retraining (.csv)"),
        "Neuron flipping": ("mem.fl", "Neuron flipping (.csv)"),
    }
    for tab, (key, download) in checks.items():
        open_tab(at, tab)
        if key == "mem.gr":
            assert at.radio(key="mem.gr.source").value == "training"  # the paper's version by default
        if key == "mem.rt":
            assert at.selectbox(key="mem.rt.grouping").value == "paper"
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


def test_a_run_without_an_in_training_record_offers_the_checkpoint_version(trained_run):
    from lenscape.models.checkpoints import read_json, write_json
    from lenscape.models.zoo import run_folder

    (rec,) = trained_run("digits-mlp", label_noise=0.1, epochs=3)
    path = run_folder(rec["run_id"]) / "run.json"
    old = read_json(path)
    del old["gradients"]
    write_json(path, old)
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.query_params["model"] = rec["run_id"]
    at.run()
    open_tab(at, "Gradients")
    assert at.radio(key="mem.gr.source").value == "checkpoints"
    at.radio(key="mem.gr.source").set_value("training").run()
    assert any("no gradients recorded during training" in i.value for i in at.info)
    assert "mem.gr.run" not in [b.key for b in at.button]


def test_a_memorized_example_opens_in_saliency_and_starred_in_the_embedding(trained_run):
    import torch

    from lenscape.backend.jobs import JobStatus
    from lenscape.models.zoo import load_model, training_data
    from lenscape.ui.jobs import backend

    (rec,) = trained_run("digits-mlp", label_noise=0.1, epochs=40)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)  # links need the app's navigation
    at.query_params["model"] = rec["run_id"]
    at.switch_page("pages/4_Memorization.py").run()
    at.button(key="mem.ov.run").click().run()
    run_until(at, lambda a: any(m.label == "Memorized" for m in a.metric))
    assert not at.exception and not at.error, [e.value for e in at.error]
    pick = at.selectbox(key="mem.ov.open").value
    links = {e.proto.label: e.proto for e in at.get("page_link")}
    saliency, embedding = links[f"Saliency map of #{pick}"], links[f"#{pick} in the embedding"]
    assert saliency.page.endswith("Saliency") and embedding.page.endswith("Similarity")
    assert "split=train" in saliency.query_string and f"idx={pick}" in saliency.query_string
    assert f"mark={pick}" in embedding.query_string and "open=Projection" in embedding.query_string

    lm = load_model(rec["run_id"])
    data = training_data(lm)
    assert data.noise_mask[pick]  # a relabelled training example
    with torch.no_grad():
        probs = lm.model(data.train.x([pick])).softmax(1)[0]
    assert int(probs.argmax()) == int(data.train.labels[pick])  # ...predicted with its flipped label

    sal = AppTest.from_file(SALIENCY, default_timeout=120)
    for k, v in {"model": rec["run_id"], "open": "Maps", "split": "train", "idx": str(pick)}.items():
        sal.query_params[k] = v
    sal.run()
    run_until(sal, lambda a: len(a.get("download_button")) == 4)
    assert not sal.exception and not sal.error
    (job_id,) = sal.session_state["sal.browse.jobs"]
    first = backend().result(job_id)[0]
    # the training image (not test image #pick): its prediction and confidence, computed here
    assert first.predictions.tolist() == [int(probs.argmax())]
    assert abs(float(first.confidences[0]) - float(probs.max())) < 1e-5
    assert sal.radio(key="sal.browse.split").value == "train"

    sim = AppTest.from_file(SIMILARITY, default_timeout=180)
    for k, v in {
        "model": rec["run_id"],
        "open": "Projection",
        "split": "train",
        "mark": str(pick),
        "colour": "memorized",
    }.items():
        sim.query_params[k] = v
    sim.run()
    assert sim.session_state["sim.proj.mark"] == pick and sim.radio(key="sim.proj.colour").value == "memorized"
    (job_id,) = sim.session_state["sim.proj.jobs"]  # projected without a click
    run_until(sim, lambda a: backend().status(job_id) in (JobStatus.DONE, JobStatus.FAILED), timeout=180)
    assert backend().status(job_id) == JobStatus.DONE, backend().error(job_id)
    res = backend().result(job_id)
    assert pick in res.indices.tolist() and res.noisy[res.indices.tolist().index(pick)]
    assert not sim.exception and not sim.error
