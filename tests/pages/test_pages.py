from pathlib import Path

import pytest
import torch
from safetensors.torch import save
from streamlit.testing.v1 import AppTest

from lenscape.errors import InvalidInputError
from lenscape.models.zoo import list_runs
from apphelpers import MODELS_PAGE, ROOT_APP, open_tab, run_until, shown


def test_home_shows_views_workspace_and_device():
    at = AppTest.from_file(ROOT_APP, default_timeout=60).run()
    assert not at.exception
    text = " ".join(m.value for m in at.markdown)
    assert "Compute" in " ".join(h.value for h in at.subheader)
    from lenscape.backend.device import describe_device
    from lenscape.ui.common import backend

    assert describe_device(backend().device)["kind"] in text  # "CPU" here, "CUDA" under LENSCAPE_DEVICE=cuda
    views = at.table[0].value
    assert list(views.index) == ["Saliency", "Level sets", "Memorization", "Similarity", "Loss landscape"]
    assert any("No models yet" in i.value for i in at.info)


def _train_tiny(at: AppTest) -> AppTest:
    at.selectbox(key="models.train.preset").set_value("digits-mlp").run()
    at.number_input(key="models.train.epochs.digits-mlp").set_value(4)
    at.text_input(key="models.train.seeds.digits-mlp").set_value("0-1")
    at.button(key="models.train.run").click().run()
    return run_until(at, lambda a: any("Trained 2 models" in s.value for s in a.success))


def test_train_two_seeds_through_the_ui_then_see_them_listed_and_summarized():
    at = AppTest.from_file(MODELS_PAGE, default_timeout=60).run()
    assert not at.exception
    _train_tiny(at)
    assert not at.exception and not at.error
    runs = list_runs()
    assert sorted(r["seed"] for r in runs) == [0, 1] and all(len(r["checkpoints"]) == 5 for r in runs)
    open_tab(at, "Workspace models")
    assert len(at.selectbox(key="models.summary.model").options) == 2
    run_until(at, lambda a: any(m.label == "Test accuracy" for m in a.metric))
    acc = next(m.value for m in at.metric if m.label == "Test accuracy")
    assert float(acc.rstrip("%")) > 80
    assert next(m.value for m in at.metric if m.label == "Parameters") == "9,610"
    home = AppTest.from_file(ROOT_APP, default_timeout=60).run()
    assert len(home.dataframe[0].value) == 2


def test_bad_upload_path_shows_a_message_and_the_page_survives(tmp_path):
    evil = tmp_path / "notes.pt"
    evil.write_text("not a model at all" * 10)
    at = open_tab(AppTest.from_file(MODELS_PAGE, default_timeout=60).run(), "Import")
    at.radio(key="models.load.source").set_value("A file on this machine").run()
    at.text_input(key="models.load.path").set_value(str(evil))
    at.button(key="models.load.run").click().run()
    assert not at.exception
    assert any("neither a safetensors file nor a PyTorch file" in e.value for e in at.error)


def _sidebar(at: AppTest) -> str:
    return " ".join(c.value for c in at.sidebar.caption).replace("**", "")


def test_import_by_path_suggests_the_architecture_becomes_current_and_is_not_renamed(tmp_path):
    from lenscape.models.architectures import ArchSpec, build_model
    from lenscape.models.data import DataSpec, load_data

    train = load_data(DataSpec(name="digits"), "train")
    spec = ArchSpec(
        name="mlp", in_shape=train.input_shape, num_classes=10, mean=train.mean, std=train.std, widths=(48, 24)
    )
    torch.manual_seed(0)
    state = {k: v.contiguous() for k, v in build_model(spec).state_dict().items()}
    path = tmp_path / "mine.safetensors"
    path.write_bytes(save(state))
    at = _train_tiny(AppTest.from_file(MODELS_PAGE, default_timeout=60).run())
    trained = at.session_state["workspace.model"]
    assert "current: Digits" in _sidebar(at)  # the finished training is current
    open_tab(at, "Import")
    at.radio(key="models.load.source").set_value("A file on this machine").run()
    at.text_input(key="models.load.path").set_value(str(path)).run()
    assert any("match **MLP**" in c.value for c in at.caption)  # suggested from keys and shapes
    assert at.text_input(key="models.load.widths.48, 24").value == "48, 24"
    assert at.text_input(key="models.load.mean.mlp").value == f"{train.mean[0]:.4g}"
    at.button(key="models.load.run").click().run()
    assert not at.exception and not at.error
    imported = at.session_state["workspace.model"]
    assert imported != trained and imported.startswith("import-")
    open_tab(at, "Workspace models")
    assert at.selectbox(key="models.summary.model").value == imported  # the picker follows, not the old value
    assert "current: mine" in _sidebar(at) and "Data set: Digits" in _sidebar(at)
    at.run()
    assert at.session_state["workspace.model"] == imported  # and stays on later reruns
    open_tab(at, "Import")
    at.radio(key="models.load.source").set_value("A file on this machine").run()
    at.text_input(key="models.load.path").set_value(str(path)).run()
    at.text_input(key="models.load.name").set_value("a new name")
    at.button(key="models.load.run").click().run()
    assert any("already in the workspace as 'mine'" in shown(i.value) for i in at.info)
    assert {r["name"] for r in list_runs() if r["run_id"] == imported} == {"mine"}
    open_tab(at, "Workspace models")
    at.selectbox(key="models.summary.model").set_value(trained).run()
    assert at.session_state["workspace.model"] == trained and "current: Digits" in _sidebar(at)


def test_views_show_the_current_models_data_set():
    from lenscape.models.architectures import ArchSpec, build_model
    from lenscape.models.data import DataSpec
    from lenscape.models.zoo import import_model

    arch = ArchSpec(name="mlp", in_shape=(1, 8, 8), num_classes=10, mean=(0.3,), std=(0.3,), widths=(16,))
    rec = import_model(build_model(arch), arch, "tiny", DataSpec(name="digits"), tuple("0123456789"), "test")
    for page in ("2_Saliency.py", "5_Similarity.py"):
        at = AppTest.from_file(str(Path(MODELS_PAGE).parent / page), default_timeout=60)
        at.session_state["workspace.model"] = rec["run_id"]
        at.run()
        assert "Data set: Digits" in _sidebar(at) and "none chosen" not in _sidebar(at), page


def test_second_session_reattaches_to_a_running_training_and_cancels_it():
    from lenscape.ui.common import backend

    first = AppTest.from_file(MODELS_PAGE, default_timeout=60).run()
    first.selectbox(key="models.train.preset").set_value("digits-cnn").run()
    first.number_input(key="models.train.epochs.digits-cnn").set_value(400)
    first.button(key="models.train.run").click().run()
    job_id = first.session_state["models.train_jobs"][0]
    second = AppTest.from_file(MODELS_PAGE, default_timeout=60).run()  # a refresh: a new session
    assert second.session_state["models.train_jobs"] == [job_id]
    assert second.get("progress"), "the running job's progress bar is shown"
    second.button(key=f"cancel.{job_id}").click().run()
    assert backend().wait(job_id, 60).value == "CANCELLED"
    run_until(second, lambda a: any("cancelled" in w.value for w in a.warning))
    assert list_runs() == []  # nothing partial is kept


def test_an_image_folder_is_decoded_by_a_job_not_on_the_page(tmp_path):
    import numpy as np
    from PIL import Image

    for cls in ("cat", "dog"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(np.full((10, 10, 3), 30 * i, dtype=np.uint8)).save(tmp_path / "imgs" / cls / f"{i}.png")
    at = AppTest.from_file(MODELS_PAGE, default_timeout=60).run()
    at.selectbox(key="models.data.name").set_value("imagefolder").run()
    at.text_input(key="models.data.folder").set_value(str(tmp_path / "imgs")).run()
    assert any("decoded once" in i.value for i in at.info)  # the page waits on a job
    run_until(at, lambda a: not any("decoded once" in i.value for i in a.info))
    assert not at.exception and not at.error
    at.run()
    assert not any("decoded once" in i.value for i in at.info)  # decoded: later loads are quick


def test_the_training_form_shows_only_the_fields_that_apply():
    at = AppTest.from_file(MODELS_PAGE, default_timeout=60).run()
    at.selectbox(key="models.train.preset").set_value("digits-mlp").run()
    labels = lambda: {w.label for w in [*at.text_input, *at.number_input, *at.selectbox, *at.checkbox]}  # noqa: E731
    assert "MLP widths" in labels() and not {"With BatchNorm", "PGD norm", "ε", "p_gen", "p_mem"} & labels()
    at.checkbox(key="models.train.adv.digits-mlp").check().run()
    assert {"PGD norm", "ε", "Steps"} <= labels()
    at.checkbox(key="models.train.tied.digits-mlp").check().run()
    assert {"p_gen", "p_mem"} <= labels()
    at.selectbox(key="models.train.arch.digits-mlp").set_value("cnn").run()
    assert "With BatchNorm" in labels() and "MLP widths" not in labels()
    assert not at.exception


def test_home_lists_every_model_with_its_test_accuracy(trained_run):
    (rec,) = trained_run("digits-mlp", epochs=2)
    at = AppTest.from_file(ROOT_APP, default_timeout=60).run()
    table = at.dataframe[0].value
    assert {"model", "data set", "architecture", "epochs", "test acc", "label noise", "seed", "created"} <= set(
        table.columns
    )
    row = table.iloc[0]
    assert row["test acc"] == rec["metrics"][-1]["test_acc"] and 0.5 < row["test acc"] <= 1 and row["epochs"] == 2
    assert not at.exception


def test_the_data_set_lives_in_the_address_bar():
    at = AppTest.from_file(MODELS_PAGE, default_timeout=60)
    at.query_params["data"] = "blockmnist"
    at.run()
    assert at.selectbox(key="models.data.name").value == "blockmnist" and not at.exception and not at.warning
    at.selectbox(key="models.data.name").set_value("digits").run()
    assert at.query_params["data"] == "digits"
    bad = AppTest.from_file(MODELS_PAGE, default_timeout=60)
    bad.query_params["data"] = "imagenet-21k"
    bad.run()
    assert any("not understood" in w.value for w in bad.warning) and not bad.exception


def test_the_recipe_says_what_changed_and_about_how_long_training_takes():
    """Issue 23, 3: the Recipe's label follows a changed architecture, and the form estimates the
    training time from a timed step (CIFAR-10's ResNet-18 for 30 epochs: hours on a CPU)."""
    at = AppTest.from_file(MODELS_PAGE, default_timeout=60).run()
    at.selectbox(key="models.train.preset").set_value("digits-mlp").run()
    about = lambda: " ".join(c.value for c in at.caption if "on this device" in c.value)  # noqa: E731
    assert "Preset **digits-mlp**. About **" in about() and "× 20 epochs" in about()
    at.selectbox(key="models.train.arch.digits-mlp").set_value("cnn").run()
    assert at.selectbox(key="models.train.preset").label == "Recipe: preset digits-mlp with Small CNN instead of MLP"
    at.number_input(key="models.train.epochs.digits-mlp").set_value(4).run()
    assert "changed: architecture, epochs" in about() and "× 4 epochs" in about()
    at.selectbox(key="models.train.arch.digits-mlp").set_value("lenet").run()  # 32×32 inputs only: said at once
    assert any("cannot take images of shape (1, 8, 8)" in shown(w.value) for w in at.warning)
    assert not at.exception


def test_cifar10s_default_recipe_shows_its_estimated_time():
    import os

    import pytest

    if not (Path(os.environ.get("LENSCAPE_DATA", "")) / "cifar10-jpg" / "test").exists():
        pytest.skip("needs CIFAR-10 in LENSCAPE_DATA")
    at = AppTest.from_file(MODELS_PAGE, default_timeout=180)
    at.query_params["data"] = "cifar10"
    run_until(at.run(), lambda a: any("on this device" in c.value for c in a.caption), timeout=300)
    about = next(c.value for c in at.caption if "on this device" in c.value)
    assert "Preset **cifar10-resnet18**" in about and "50,000 images × 30 epochs" in about and "About **" in about
    assert not at.exception and not at.error


def test_a_torchvision_state_dict_is_offered_as_a_torchvision_architecture(tmp_path):
    """Issue 23, 3: an uploaded torchvision classifier's weights are recognized by name; the list of
    architectures holds torchvision's classifiers."""
    import numpy as np
    import torchvision
    from PIL import Image

    for cls in ("cat", "dog"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.full((32, 32, 3), 50 * i, dtype=np.uint8)).save(tmp_path / "imgs" / cls / f"{i}.png")
    state = {
        k: v.contiguous()
        for k, v in torchvision.models.get_model("resnet18", weights=None, num_classes=2).state_dict().items()
    }
    (tmp_path / "tv.safetensors").write_bytes(save(state))
    at = AppTest.from_file(MODELS_PAGE, default_timeout=60)
    at.query_params.update({"data": "imagefolder", "folder": str(tmp_path / "imgs"), "tab": "Import"})
    run_until(at.run(), lambda a: any(r.key == "models.load.source" for r in a.radio))  # decoded by a job first
    at.radio(key="models.load.source").set_value("A file on this machine").run()
    at.text_input(key="models.load.path").set_value(str(tmp_path / "tv.safetensors")).run()
    assert any("match **torchvision resnet18**" in c.value for c in at.caption), [c.value for c in at.caption]
    picker = at.selectbox(key="models.load.arch.torchvision:resnet18")
    assert picker.value == "torchvision:resnet18" and "torchvision vgg11" in picker.options
    at.button(key="models.load.run").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert [r["arch"]["torchvision_name"] for r in list_runs()] == ["resnet18"]


def test_an_imported_model_shows_its_test_accuracy_on_home_and_runs_and_the_data_set_follows_it(tmp_path):
    """Issue 23, 5: an imported model has no training metrics; its accuracy is the one its summary
    measures (the Models page's figure), computed when it is imported. A link naming a model makes it
    current, with its data set, on pages without a model picker too."""
    from lenscape.models.architectures import ArchSpec, build_model
    from lenscape.models.data import DataSpec, load_data
    from lenscape.ui.common import backend

    train = load_data(DataSpec(name="digits"), "train")
    spec = ArchSpec(
        name="mlp", in_shape=train.input_shape, num_classes=10, mean=train.mean, std=train.std, widths=(32,)
    )
    torch.manual_seed(0)
    path = tmp_path / "mine.safetensors"
    path.write_bytes(save({k: v.contiguous() for k, v in build_model(spec).state_dict().items()}))
    at = open_tab(AppTest.from_file(MODELS_PAGE, default_timeout=60).run(), "Import")
    at.radio(key="models.load.source").set_value("A file on this machine").run()
    at.text_input(key="models.load.path").set_value(str(path)).run()
    at.button(key="models.load.run").click().run()
    (job_id,) = at.session_state["models.summary_job"]  # submitted with the import
    acc = backend().result(job_id) if backend().wait(job_id, 120).value == "DONE" else None
    assert acc is not None
    (rec,) = list_runs()
    home = AppTest.from_file(ROOT_APP, default_timeout=60)
    home.query_params["model"] = rec["run_id"]
    home.run()
    assert home.dataframe[0].value["test acc"][0] == acc.test_acc
    assert "Data set: Digits" in _sidebar(home) and "current: mine" in _sidebar(home)
    assert any("**Data set:** Digits" in m.value for m in home.markdown)
    runs = AppTest.from_file(ROOT_APP, default_timeout=60)
    runs.query_params["model"] = rec["run_id"]
    runs.switch_page("pages/7_Runs.py").run()
    assert runs.dataframe[0].value["test acc"][0] == acc.test_acc and "Data set: Digits" in _sidebar(runs)


def test_a_torchvision_classifier_by_name_shows_its_recipe_and_says_why_without_a_network():
    """torchvision's weights metadata (no download): the crop, the resize and the class names, and whether
    this data set fits them; where the weights cannot be downloaded the import says so and the page lives."""
    from lenscape.models.loading import torchvision_recipe

    recipe = torchvision_recipe("resnet50")
    assert recipe.classes[:2] == ("tench", "goldfish") and len(recipe.classes) == 1000
    assert (recipe.image_size, recipe.resize, recipe.mean) == (224, 232, (0.485, 0.456, 0.406))
    assert torchvision_recipe("inception_v3").image_size == 299
    with pytest.raises(InvalidInputError, match="no classification recipe"):
        torchvision_recipe("not_a_model")
    at = open_tab(AppTest.from_file(MODELS_PAGE, default_timeout=60).run(), "Import")
    at.radio(key="models.load.source").set_value("torchvision classifier by name").run()
    at.text_input(key="models.load.tv").set_value("resnet50").run()
    said = shown(" ".join(c.value for c in at.caption))
    assert "ResNet50_Weights.IMAGENET1K_V2" in said and "224-px crops" in said and "232 px" in said
    assert "do not match this data set's 10" in said and "8-px images" in said
    assert "3-channel mean and std do not fit this 1-channel data set" in said
    at.button(key="models.load.run").click().run()
    assert not at.exception
    assert any("could not get torchvision's weights for 'resnet50'" in shown(e.value) for e in at.error)


def test_the_import_form_imports_a_timm_model_from_a_weights_file(tmp_path):
    pytest.importorskip("timm")
    digits = dict(in_shape=(1, 8, 8), num_classes=10, mean=(0.5,), std=(0.5,))
    """The Models page's Import tab: timm by name, its recipe said, weights from a file; the model lands
    in the workspace and is rebuilt from its record to the same weights."""
    from safetensors.torch import save_file

    from lenscape.models.architectures import ArchSpec, build_model
    from lenscape.models.zoo import load_model

    net = build_model(ArchSpec(name="timm", timm_name="resnet18", **digits), seed=1)
    weights = tmp_path / "resnet18-digits.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(weights))
    at = open_tab(AppTest.from_file(MODELS_PAGE, default_timeout=60).run(), "Import")
    at.radio(key="models.load.source").set_value("timm classifier by name").run()
    at.text_input(key="models.load.timm").set_value("resnet18").run()
    said = shown(" ".join(c.value for c in at.caption))
    assert "timm's recipe (timm resnet18." in said and "do not match this data set's 10" in said
    at.radio(key="models.load.timmw").set_value("from a file on this machine").run()
    at.text_input(key="models.load.timmpath").set_value(str(weights)).run()
    at.button(key="models.load.run").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    (rec,) = [r for r in list_runs() if r["arch"]["name"] == "timm"]
    lm = load_model(rec["run_id"])
    assert lm.arch.timm_name == "resnet18" and lm.arch.mean != (0.5,)  # the data set's statistics by default
    got = lm.model.state_dict()
    assert got.keys() == net.state_dict().keys() and all(torch.equal(got[k], v) for k, v in net.state_dict().items())
    at.text_input(key="models.load.timm").set_value("no_such_net").run()
    assert any("timm has no classifier 'no_such_net'" in shown(w.value) for w in at.warning)
