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
    run_until(at, lambda a: any("p0 =" in c.value for c in a.caption))  # predictions, then the pair
    at.selectbox(key="lst.cls").set_value(3).run()
    at.number_input(key="lst.which.3").set_value(2).run()
    at.multiselect(key="lst.targets.3").set_value([1, 5]).run()
    at.number_input(key="lst.tw.5").set_value(2).run()
    at.number_input(key="lst.T.argparse defaults (η 0.05, T 100, δ 0.05)").set_value(20).run()
    at.button(key="lst.run").click().run()
    run_until(at, lambda a: any(b.label == "Path and metrics (.npz)" for b in a.get("download_button")))
    assert any("Outputs" in m.value for m in at.markdown)
    assert len(at.dataframe) == 1 and len(at.dataframe[0].value) == 1  # one triangle for two outputs
    assert not at.exception and not at.error

    # the address bar names the images (test-set indices): a shared link opens on the same ones
    from lenscape.ui.jobs import backend

    res = backend().result(at.session_state["lst.job"][0])
    assert at.query_params["source"] == str(res.source) and at.query_params["targets"] == ",".join(
        map(str, res.targets)
    )
    assert res.source not in (0, 1) and len(res.targets) == 2
    link = AppTest.from_file(PAGE, default_timeout=120)
    for param in ("model", "source", "targets"):
        link.query_params[param] = at.query_params[param]
    run_until(link.run(), lambda a: any("p0 =" in c.value for c in a.caption))
    assert (link.selectbox(key="lst.cls").value, link.number_input(key="lst.which.3").value) == (3, 2)
    assert link.multiselect(key="lst.targets.3").value == [1, 5] and link.number_input(key="lst.tw.5").value == 2
    link.number_input(key="lst.T.argparse defaults (η 0.05, T 100, δ 0.05)").set_value(20).run()
    link.button(key="lst.run").click().run()
    assert link.session_state["lst.job"] == at.session_state["lst.job"]  # the same job: stored, not rerun
    bad = AppTest.from_file(PAGE, default_timeout=120)
    bad.query_params["source"] = "99999"
    bad.run()  # the model's predictions are stored: the pair shows at once
    assert any(r"source=\'99999\'" in w.value for w in bad.warning) and not bad.exception  # shown as text
    assert bad.selectbox(key="lst.cls").value == 0


def test_two_models_side_by_side_with_random_targets(trained_run):
    """A second model of the same data set runs on the same source and targets; the page puts the two
    results side by side with one comparison table and per-model exports. Random targets are of
    distinct classes other than the source's, classified correctly by both models."""
    import numpy as np
    import torch

    from lenscape.models.data import DataSpec, load_data
    from lenscape.models.zoo import load_model
    from lenscape.ui.jobs import backend

    a, b = trained_run("digits-cnn", seeds=(0, 1), epochs=8)
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.query_params["model"] = a["run_id"]
    at.run()
    at.toggle(key="lst.compare").set_value(True).run()
    run_until(at, lambda x: any(c.value.count("p0 =") == 2 for c in x.caption))  # p0 under each model
    at.radio(key="lst.mode").set_value("at random").run()
    at.slider(key="lst.nrand").set_value(2).run()
    at.number_input(key="lst.T.argparse defaults (η 0.05, T 100, δ 0.05)").set_value(15).run()
    at.button(key="lst.run").click().run()
    run_until(at, lambda x: any(s.value == "Side by side" for s in x.subheader), timeout=180)
    assert not at.exception and not at.error
    names = [m.value for m in at.markdown if m.value.startswith("#### ")]
    assert len(names) == 2 and names[0] != names[1]
    table = at.dataframe[0].value  # the comparison table: a row per model
    assert len(table) == 2 and "triangle mean p(c)" in table.columns
    assert {d.label for d in at.get("download_button")} >= {"Comparison (.csv)", "Path images (.png)"}

    results = [backend().result(i) for i in at.session_state["lst.job"]]
    assert results[0].source == results[1].source and results[0].targets == results[1].targets
    test = load_data(DataSpec(name="digits"), "test")
    labels = test.labels.numpy()
    tl = labels[results[0].targets]
    assert len(tl) == 2 and len(set(tl)) == 2 and results[0].label not in tl
    idx = [results[0].source, *results[0].targets]
    for run in (a, b):
        with torch.no_grad():
            pred = load_model(run["run_id"]).model(test.x(idx)).argmax(1).numpy()
        assert np.array_equal(pred, labels[idx])
    # another draw gives other targets
    at.number_input(key="lst.rseed").set_value(1).run()
    at.button(key="lst.run").click().run()
    run_until(at, lambda x: any(s.value == "Side by side" for s in x.subheader), timeout=180)
    again = backend().result(at.session_state["lst.job"][0])
    assert again.source == results[0].source and again.targets != results[0].targets


def test_each_triangle_is_titled_with_its_own_pair_of_outputs():
    """With every pair drawn, the second triangle is outputs 1 and 3, not 2 and 3."""
    import numpy as np

    from lenscape.analysis.level_sets import Triangle
    from lenscape.ui.level_sets import triangle_figure

    w = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    tri = Triangle(weights=w, confidence=np.ones(3), xy=w, p_source=1.0, mean=1.0, fraction_above={}, edge_min=0.0)
    fig = triangle_figure(tri, (0, 2))
    assert fig.layout.title.text == "Triangle: source, outputs 1 and 3"
    assert [a.text for a in fig.layout.annotations] == ["source", "output 1", "output 3"]


def test_the_accepted_share_stays_on_a_share_axis():
    """Issue 23, 7: with every step accepted the running share is 1 throughout; its axis is 0-100%,
    not an autorange of 0-2 around the constant."""
    from types import SimpleNamespace

    import numpy as np

    from lenscape.ui.level_sets import curves

    T, k = 8, 2
    lst = SimpleNamespace(
        confidence=np.ones((T + 1, k)),
        dist_l2=np.ones((T + 1, k)),
        dist_linf=np.ones((T + 1, k)),
        ssim=np.ones((T + 1, k)),
        accepted=np.ones((T, k), dtype=bool),
        p0=np.ones(k),
    )
    res = SimpleNamespace(lst=lst, targets=[3, 4], delta=0.05)
    for compact in (False, True):
        fig = curves(res, compact)
        share = fig.layout.yaxis4
        assert tuple(share.range) == (0, 1.05) and share.tickformat == ".0%"
        assert max(max(t.y) for t in fig.data if t.yaxis == "y4") == 1.0
        assert fig.layout.xaxis.dtick == 1  # 8 steps: whole ones


def test_the_default_source_class_is_one_the_model_gets_right():
    """A model that calls every image a 3 (zero weights, bias on class 3): the page starts on class 3,
    not on class 0 with a warning that no image of it is classified correctly."""
    import torch

    import lenscape
    from tests import custom_nets

    net = custom_nets.linear_net()
    with torch.no_grad():
        net[1].weight.zero_()
        net[1].bias.copy_(torch.nn.functional.one_hot(torch.tensor(3), 10).float())
    run_id = lenscape.add_model(net, custom_nets.DigitsDataset(), architecture="tests.custom_nets:linear_net")
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.query_params["model"] = run_id
    run_until(at, lambda a: any(s.key == "lst.cls" for s in a.selectbox))  # after the predictions job
    assert not at.exception
    assert at.selectbox(key="lst.cls").value == 3
    assert not any("is classified correctly" in w.value for w in at.warning)


def test_class_names_in_the_picture_titles_are_text(tmp_path, monkeypatch):
    """A model's class names come from its importer: the source and target pictures' titles (Plotly
    annotations, which read a little HTML) show them as written."""
    import json

    import torch

    from lenscape.models.architectures import ArchSpec, build_model
    from lenscape.models.data import DataSpec
    from lenscape.models.zoo import import_model

    monkeypatch.setenv("LENSCAPE_HOME", str(tmp_path))
    arch = ArchSpec(name="mlp", in_shape=(1, 8, 8), num_classes=10, mean=(0.3,), std=(0.3,), widths=(16,))
    torch.manual_seed(0)
    classes = tuple(f"<b>c{i}</b>" for i in range(10))
    run = import_model(
        build_model(arch), arch, "markup classes", DataSpec(name="digits"), classes, "t", root=tmp_path / "runs"
    )
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.query_params["model"] = run["run_id"]
    at.run()
    run_until(at, lambda a: any('"source #' in c.proto.spec for c in a.get("plotly_chart")), timeout=120)
    (pair,) = [c for c in at.get("plotly_chart") if '"source #' in c.proto.spec]
    titles = [a["text"] for a in json.loads(pair.proto.spec)["layout"]["annotations"]]
    assert titles and all("<b>" not in t and "&lt;b&gt;c" in t for t in titles), titles
