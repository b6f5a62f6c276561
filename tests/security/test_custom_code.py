"""Only the person who runs the server names code (issue 25). A run record, a bundle or a link that
names an architecture reference this server was not given is refused before anything is imported:
a module that would leave a mark when imported leaves none."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from streamlit.testing.v1 import AppTest

from lenscape.errors import InvalidInputError
from tests import custom_nets

ROOT = Path(__file__).resolve().parents[2]

EVIL = "lenscape_evil_nets"


@pytest.fixture
def evil(tmp_path, monkeypatch):
    """An importable module whose import writes a marker file; returns the marker."""
    marker = tmp_path / "imported"
    pkg = tmp_path / "code"
    pkg.mkdir()
    (pkg / f"{EVIL}.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\nimport torch\ndef build(**kw):\n    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))\n"
    )
    monkeypatch.syspath_prepend(str(pkg))
    monkeypatch.delenv("LENSCAPE_CODE", raising=False)
    yield marker
    sys.modules.pop(EVIL, None)


def _plant_run(arch_ref: str) -> str:
    """A run folder as a crafted bundle or a hand-edited workspace would leave it: a custom
    architecture naming `arch_ref`, with weights that fit it."""
    from lenscape.models.architectures import ArchSpec
    from lenscape.models.checkpoints import model_fingerprint, save_checkpoint, write_json
    from lenscape.models.paths import runs_dir

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    fp = model_fingerprint(model)  # the input_norm's buffers aside: the load fails before any check
    arch = ArchSpec(name="custom", builder=arch_ref, in_shape=(1, 8, 8), num_classes=10, mean=(0.0,), std=(1.0,))
    run_id = f"import-{fp}"
    folder = runs_dir() / run_id
    save_checkpoint(folder / "epoch_000.safetensors", model, {"epoch": 0})
    write_json(
        folder / "run.json",
        {
            "run_id": run_id,
            "name": "planted",
            "created": 1.0,
            "arch": arch.to_dict(),
            "data": {"name": "digits"},
            "classes": list("0123456789"),
            "checkpoints": [{"epoch": 0, "file": "epoch_000.safetensors", "fingerprint": fp}],
            "metrics": [],
            "status": "complete",
        },
    )
    return run_id


def test_a_run_record_naming_code_the_server_was_not_given_is_refused_unimported(evil):
    from lenscape.models.zoo import load_model

    run_id = _plant_run(f"{EVIL}:build")
    with pytest.raises(InvalidInputError, match="not allowed"):
        load_model(run_id)
    assert not evil.exists() and EVIL not in sys.modules


def test_a_link_to_such_a_model_shows_an_error_and_imports_nothing(evil):
    run_id = _plant_run(f"{EVIL}:build")
    at = AppTest.from_file(str(ROOT / "pages" / "2_Saliency.py"), default_timeout=60)
    at.query_params["model"] = run_id
    at.run()
    assert not at.exception
    assert not evil.exists() and EVIL not in sys.modules


def test_the_operator_names_code_and_then_it_builds(evil, monkeypatch):
    """The same reference, given by whoever starts the server (LENSCAPE_CODE), is built."""
    from lenscape.models.zoo import load_model

    run_id = _plant_run(f"{EVIL}:build")
    monkeypatch.setenv("LENSCAPE_CODE", f"other.mod:fn, {EVIL}:build")
    with pytest.raises(InvalidInputError, match="weights"):  # built (the marker is there); the planted
        load_model(run_id)  # fingerprint left out the normalization, so the check refuses the weights
    assert evil.exists()


def test_a_bundle_naming_code_this_server_was_not_given_is_refused_whole(tmp_path, monkeypatch):
    """Exported where the reference was given, imported where it was not: refused, nothing written."""
    import lenscape
    from lenscape.analysis import SaliencyConfig
    from lenscape.backend.jobs import JobStatus, job, ref
    from lenscape.backend.runner import open_backend
    from lenscape.backend.saliency_tasks import GridConfig
    from lenscape.models.zoo import list_runs, load_model

    monkeypatch.setenv("LENSCAPE_HOME", str(tmp_path / "there"))
    run_id = lenscape.add_model(
        custom_nets.residual_cnn(width=4, blocks=1),
        custom_nets.DigitsDataset(),
        architecture="tests.custom_nets:residual_cnn",
        kwargs={"width": 4, "blocks": 1},
    )
    runner = open_backend()
    r = ref(load_model(run_id))
    jid = runner.submit(job("saliency", GridConfig(model=r, indices=(0,), methods=(SaliencyConfig(),)), (r,)))
    assert runner.wait(jid, 120) == JobStatus.DONE
    bundle = runner.export_bundle(jid)
    runner.shutdown()

    monkeypatch.setenv("LENSCAPE_HOME", str(tmp_path / "here"))
    here = open_backend()
    try:
        with pytest.raises(InvalidInputError, match="not allowed"):
            here.import_bundle(bundle)
        assert list_runs() == [] and here.records() == []
    finally:
        here.shutdown()


@pytest.mark.parametrize("ref", ["os:system", "os.path:join", "builtins:eval", "subprocess:Popen"])
def test_well_known_dangerous_callables_are_names_like_any_other(ref, lenscape_home):
    from lenscape.models.architectures import ArchSpec, build_model

    arch = ArchSpec(name="custom", builder=ref, in_shape=(1, 8, 8), num_classes=10, mean=(0.0,), std=(1.0,))
    with pytest.raises(InvalidInputError, match="not allowed"):
        build_model(arch)


@pytest.mark.parametrize("bad", ["os.system", "a:b()", "../x:y", "x:y; rm -rf", "x: y", "", "x:", ":y", 3])
def test_references_that_are_not_dotted_names_are_refused(bad):
    from lenscape.models.custom import check_ref

    with pytest.raises(InvalidInputError, match="module:callable"):
        check_ref(bad)


def test_the_import_form_names_no_code_and_says_who_can(lenscape_home):
    at = AppTest.from_file(str(ROOT / "pages" / "1_Models.py"), default_timeout=60)
    at.query_params["tab"] = "Import"
    at.run()
    assert not at.exception
    labels = [w.label.lower() for w in (*at.text_input, *at.text_area, *at.selectbox)]
    assert not any(word in label for label in labels for word in ("module", "callable", "code", "python"))
    shown = " ".join(m.value for m in (*at.markdown, *at.caption))
    assert "lenscape.add_model" in shown and "--model" in shown


def test_a_notebook_class_is_refused_with_how_to_name_it():
    from lenscape.models.custom import ref_of

    class Local(torch.nn.Module):
        pass

    with pytest.raises(InvalidInputError, match="architecture="):
        ref_of(Local())


def test_kwargs_must_be_plain_json():
    from lenscape.models.custom import canonical_kwargs

    assert canonical_kwargs({"b": 1, "a": [2.5, "x"]}) == json.dumps({"a": [2.5, "x"], "b": 1})
    for bad in ({"f": float("nan")}, {"m": torch.nn.Linear(1, 1)}, [1, 2], "{not json"):
        with pytest.raises(InvalidInputError):
            canonical_kwargs(bad)


def test_sessions_trusting_code_at_once_lose_none_of_it(lenscape_home):
    """Eight processes (notebooks, a `lenscape app --model`) each trust a reference at the same moment."""
    import subprocess

    from lenscape.models.custom import trusted_refs

    code = "import sys\nfrom lenscape.models.custom import trust\ntrust(ref=f'pkg{sys.argv[1]}.nets:build')\n"
    procs = [subprocess.Popen([sys.executable, "-c", code, str(i)], cwd=str(ROOT)) for i in range(8)]
    assert [p.wait(timeout=120) for p in procs] == [0] * 8
    assert {f"pkg{i}.nets:build" for i in range(8)} <= trusted_refs()


@pytest.fixture
def counting(tmp_path, monkeypatch):
    """A trusted-looking builder that leaves a line in a file each time it is called; returns the file."""
    calls = tmp_path / "calls"
    pkg = tmp_path / "code2"
    pkg.mkdir()
    (pkg / "lenscape_counting_nets.py").write_text(
        f"import torch\ndef build(width=10, **kw):\n    open({str(calls)!r}, 'a').write(repr(kw) + '\\n')\n"
        "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, width))\n"
    )
    monkeypatch.syspath_prepend(str(pkg))
    monkeypatch.delenv("LENSCAPE_CODE", raising=False)
    yield calls
    sys.modules.pop("lenscape_counting_nets", None)


def test_a_record_cannot_choose_the_arguments_of_trusted_code(counting, lenscape_home):
    """Trust is the reference with its exact arguments: a record (hand-placed, or from a bundle) that gives
    a trusted function other arguments is refused before the function is called."""
    from lenscape.models.custom import trust
    from lenscape.models.zoo import load_model

    trust(ref="lenscape_counting_nets:build", kwargs={"width": 10})
    run_id = _plant_run("lenscape_counting_nets:build")  # kwargs {} here: not what was trusted
    with pytest.raises(InvalidInputError, match="not allowed with these arguments"):
        load_model(run_id)
    assert not counting.exists()


def test_code_is_trusted_only_once_add_model_has_built_and_checked_it(counting, lenscape_home, tmp_path):
    """A failed add_model (a typo, a callable that is not a network, a folder with no images) leaves no
    trust behind: neither the reference nor the folder."""
    import lenscape
    from lenscape.models.custom import trusted_folders, trusted_refs
    from lenscape.models.paths import allowed_roots

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    data = custom_nets.DigitsDataset("train")
    for ref in ("lenscape_counting_nets:buidl", "os:getcwd", "no_such_pkg.nets:build"):
        with pytest.raises(InvalidInputError):
            lenscape.add_model(net, data, architecture=ref)
    with pytest.raises(InvalidInputError):  # arguments it does not take
        lenscape.add_model(net, data, architecture="lenscape_counting_nets:build", kwargs={"width": "wide"})
    empty = tmp_path / "no-images"
    empty.mkdir()
    with pytest.raises(InvalidInputError):
        lenscape.add_model(net, str(empty), architecture="lenscape_counting_nets:build")
    assert trusted_refs() == set() and trusted_folders() == []
    assert str(empty.resolve()) not in map(str, allowed_roots())
    run_id = lenscape.add_model(net, data, architecture="lenscape_counting_nets:build")  # this one works
    assert trusted_refs() == {"lenscape_counting_nets:build"} and run_id.startswith("import-")


def test_notebook_references_and_deep_kwargs_are_refused_with_a_reason():
    from lenscape.models.custom import canonical_kwargs, check_ref

    with pytest.raises(InvalidInputError, match="__main__"):
        check_ref("__main__:Net")
    with pytest.raises(InvalidInputError, match="nested too deeply|not JSON"):
        canonical_kwargs("[" * 3000 + "]" * 3000)
    deep: dict = {}
    node = deep
    for _ in range(3000):
        node["a"] = {}
        node = node["a"]
    with pytest.raises(InvalidInputError, match="nested too deeply"):
        canonical_kwargs(deep)


def test_a_bundle_run_id_covers_the_recipes_code_and_its_arguments(lenscape_home, monkeypatch):
    """A trained run's id comes from its recipe: a record whose recipe names one build and whose
    architecture another is refused; a recipe naming code this server was not given is refused too."""
    from lenscape.backend.bundle_checks import check_run_id
    from lenscape.models.custom import trust
    from lenscape.models.training import preset, run_id_for

    monkeypatch.delenv("LENSCAPE_CODE", raising=False)
    cfg = preset("digits-mlp", arch="custom", builder="tests.custom_nets:residual_cnn", builder_kwargs={"width": 8})
    arch = {"name": "custom", "builder": cfg.builder, "builder_kwargs": cfg.builder_kwargs}
    run = {"run_id": run_id_for(cfg), "config": cfg.to_dict(), "arch": {**arch, "widths": [256, 256]}}
    todo = [{"name": "x"}]
    with pytest.raises(InvalidInputError, match="not allowed"):
        check_run_id(run, todo)
    trust(ref=cfg.builder, kwargs=cfg.builder_kwargs)
    run["arch"].update(
        widths=list(cfg.widths), channels=list(cfg.channels), batchnorm=cfg.batchnorm, p_gen=0.0, p_mem=0.0
    )
    check_run_id(run, todo)  # the honest record passes
    run["arch"]["builder_kwargs"] = '{"width": 999}'
    with pytest.raises(InvalidInputError, match="not the ones its recipe makes"):
        check_run_id(run, todo)


def test_add_model_refuses_labels_and_normalizations_that_are_not_what_they_claim(lenscape_home):
    import lenscape

    net = custom_nets.linear_net()
    data = custom_nets.DigitsDataset("train")
    n = int(len(data) * 0.8)  # the training split of one Dataset
    bad = {
        "NaN labels": dict(clean_labels=[float("nan")] * n),
        "labels past the classes": dict(clean_labels=[10**6] * n),
        "text labels": dict(clean_labels=["a"] * n),
        "text mean": dict(mean="abc"),
        "zero std": dict(std=(0.0,)),
        "negative std": dict(std=(-1.0,)),
        "infinite mean": dict(mean=(float("inf"),)),
    }
    for what, kwargs in bad.items():
        with pytest.raises(InvalidInputError):
            lenscape.add_model(net, data, architecture="tests.custom_nets:linear_net", **kwargs)
            pytest.fail(what)


def test_an_architecture_record_with_unknown_or_missing_fields_is_refused_with_a_reason():
    from lenscape.models.architectures import ArchSpec

    good = ArchSpec(name="mlp", in_shape=(1, 8, 8), num_classes=10, mean=(0.0,), std=(1.0,)).to_dict()
    assert ArchSpec.from_dict(good).name == "mlp"
    with pytest.raises(InvalidInputError, match="does not know"):
        ArchSpec.from_dict({**good, "evil": 1})
    with pytest.raises(InvalidInputError, match="incomplete"):
        ArchSpec.from_dict({k: v for k, v in good.items() if k != "num_classes"})
    with pytest.raises(InvalidInputError):
        ArchSpec.from_dict(["mlp"])  # type: ignore[arg-type]


def test_a_label_noise_record_must_fit_the_split_and_the_classes(lenscape_home):
    """A hand-written or bundled record of an imported model: noise indices inside the training split, labels
    among its classes (a label of 12,345 reached a saliency job as an out-of-bounds index)."""
    import lenscape
    from lenscape.models.checkpoints import write_json
    from lenscape.models.paths import runs_dir
    from lenscape.models.zoo import get_run, load_model, training_data

    run_id = lenscape.add_model(
        custom_nets.linear_net(), custom_nets.DigitsDataset("train"), architecture="tests.custom_nets:linear_net"
    )
    rec = get_run(run_id)
    for noise in ({"indices": [0, 1], "original_labels": [9, 12345]}, {"indices": [-1, 0], "original_labels": [1, 2]}):
        write_json(runs_dir() / run_id / "run.json", {**rec, "noise": {**noise, "noisy_labels": [0, 0]}})
        with pytest.raises(InvalidInputError, match="does not fit"):
            training_data(load_model(run_id))
    write_json(runs_dir() / run_id / "run.json", {**rec, "noise": {"indices": [0], "original_labels": [9]}})
    assert training_data(load_model(run_id)).noise_mask[0]


def test_an_old_trust_file_trusts_neither_code_nor_folders_and_a_folder_swapped_for_a_link_is_not_followed(
    lenscape_home, tmp_path
):
    from lenscape.models.custom import trust, trusted_folders, trusted_refs
    from lenscape.models.paths import allowed_roots

    (lenscape_home / "trusted_code.json").write_text(json.dumps({"code": ["os:system"], "folders": ["/"]}))
    assert trusted_refs() == set() and trusted_folders() == []
    (lenscape_home / "trusted_code.json").unlink()
    images = tmp_path / "imgs"
    images.mkdir()
    trust(folder=str(images))
    assert images.resolve() in allowed_roots()
    images.rmdir()
    images.symlink_to("/etc")  # the folder's parent is writable by someone else
    assert Path("/etc") not in allowed_roots() and images not in allowed_roots()


def test_a_recipe_with_builder_arguments_but_no_builder_is_refused():
    from lenscape.models.training import preset

    with pytest.raises(InvalidInputError, match="builder"):
        preset("digits-mlp", builder_kwargs='{"width": 8}')
