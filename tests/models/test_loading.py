import io
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save

from tests.conftest import has_data
from lenscape.models.architectures import ArchSpec, build_model
from lenscape.models.checkpoints import load_checkpoint, model_fingerprint, save_checkpoint
from lenscape.models.data import DataSpec, load_data
from lenscape.errors import InvalidInputError
from lenscape.models.loading import model_from_state, read_state_dict, torchvision_pretrained
from lenscape.models.training import evaluate

LENET = Path(os.environ.get("LENSCAPE_DATA", "")) / "models" / "cifar10_lenet_captum_tutorial.pt"
SPEC = ArchSpec(name="cnn", in_shape=(1, 8, 8), num_classes=10, mean=(0.3,), std=(0.3,))


def _bytes_of(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def test_checkpoint_round_trip_is_bit_exact(tmp_path):
    torch.manual_seed(0)
    model = build_model(
        ArchSpec(name="cnn", in_shape=(1, 8, 8), num_classes=10, mean=(0.3,), std=(0.3,), batchnorm=True)
    )
    model.train()(torch.rand(8, 1, 8, 8))  # non-trivial BatchNorm running statistics
    save_checkpoint(tmp_path / "m.safetensors", model, {"arch": "cnn", "epoch": 3})
    state, meta = load_checkpoint(tmp_path / "m.safetensors")
    original = model.state_dict()
    assert state.keys() == original.keys() and meta == {"arch": "cnn", "epoch": 3}
    assert all(torch.equal(state[k], original[k]) and state[k].dtype == original[k].dtype for k in state)
    assert model_fingerprint(model) == model_fingerprint(
        model_from_state(
            model_spec := ArchSpec(
                name="cnn", in_shape=(1, 8, 8), num_classes=10, mean=(0.3,), std=(0.3,), batchnorm=True
            ),
            state,
        )
    )
    assert model_spec.batchnorm


@pytest.mark.parametrize("fmt", ["safetensors", "torch", "torch-wrapped", "dataparallel"])
def test_each_format_loads(fmt):
    torch.manual_seed(1)
    model = build_model(SPEC)
    state = model.state_dict()
    raw = {
        "safetensors": lambda: save({k: v.contiguous() for k, v in state.items()}),
        "torch": lambda: _bytes_of(state),
        "torch-wrapped": lambda: _bytes_of({"state_dict": state, "epoch": 3}),
        "dataparallel": lambda: _bytes_of({f"module.{k}": v for k, v in state.items()}),
    }[fmt]()
    loaded = model_from_state(SPEC, read_state_dict(raw, f"m.{fmt}"))
    assert model_fingerprint(loaded) == model_fingerprint(model)


@pytest.mark.skipif(not (LENET.exists() and has_data("cifar10")), reason="needs shared/data")
def test_foreign_lenet_state_dict_scores_its_published_accuracy():
    spec = ArchSpec(name="lenet", in_shape=(3, 32, 32), num_classes=10, mean=(0.5,) * 3, std=(0.5,) * 3)
    model = model_from_state(spec, read_state_dict(LENET.read_bytes(), LENET.name))
    _, acc, _ = evaluate(model, load_data(DataSpec(name="cifar10"), "test"))
    assert acc == pytest.approx(0.584, abs=0.01)


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))  # creating the file is the "code execution"


def test_code_executing_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    raw = _bytes_of({"weight": torch.zeros(2), "evil": _Payload(str(marker))})
    assert not marker.exists()
    with pytest.raises(InvalidInputError, match="refused"):
        read_state_dict(raw, "evil.pt")
    assert not marker.exists()


def test_whole_pickled_model_is_refused():
    with pytest.raises(InvalidInputError, match="state_dict"):
        read_state_dict(_bytes_of(build_model(SPEC)), "model.pt")


@pytest.mark.parametrize(
    "raw,match", [(b"hello, I am a text file\n" * 4, "neither a safetensors"), (b"", "not a model file")]
)
def test_not_a_model_file(raw, match):
    with pytest.raises(InvalidInputError, match=match):
        read_state_dict(raw, "notes.txt")


@pytest.mark.parametrize("maker", ["safetensors", "torch"])
def test_truncated_files(maker):
    state = build_model(SPEC).state_dict()
    raw = save({k: v.contiguous() for k, v in state.items()}) if maker == "safetensors" else _bytes_of(state)
    with pytest.raises(InvalidInputError, match="truncated"):
        read_state_dict(raw[: len(raw) // 2], "half")


def test_state_dict_that_does_not_fit_lists_names_and_shapes():
    state = build_model(SPEC).state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["fc2.bias"]
    mlp = ArchSpec(name="cnn", in_shape=(1, 8, 8), num_classes=10, mean=(0.3,), std=(0.3,), channels=(16, 64))
    with pytest.raises(InvalidInputError) as err:
        model_from_state(mlp, state)
    msg = str(err.value)
    assert (
        "fc2.bias" in msg and "extra.weight" in msg and "conv1.weight: file (32, 1, 3, 3) vs model (16, 1, 3, 3)" in msg
    )


def test_output_size_and_image_size_mismatch():
    state = build_model(SPEC).state_dict()
    two_class = ArchSpec(name="cnn", in_shape=(1, 8, 8), num_classes=2, mean=(0.3,), std=(0.3,))
    with pytest.raises(InvalidInputError, match="shape mismatch"):
        model_from_state(two_class, state)
    with pytest.raises(InvalidInputError, match="cannot take images of shape"):
        build_model(ArchSpec(name="lenet", in_shape=(3, 8, 8), num_classes=10, mean=(0.5,) * 3, std=(0.5,) * 3))
    with pytest.raises(InvalidInputError, match="outputs per image but the data set has 2 classes"):
        from lenscape.models.architectures import check_io

        check_io(build_model(SPEC), two_class)


def test_torchvision_by_name_without_network_says_what_to_do():
    tv = ArchSpec(
        name="torchvision",
        torchvision_name="resnet18",
        in_shape=(3, 32, 32),
        num_classes=10,
        mean=(0.5,) * 3,
        std=(0.5,) * 3,
    )
    model = build_model(tv)
    assert "input_norm" in dict(model.named_modules()) and "input_norm.mean" not in model.state_dict()
    reloaded = model_from_state(tv, model.state_dict())
    assert model_fingerprint(reloaded) == model_fingerprint(model)
    with pytest.raises(InvalidInputError, match="no classifier"):
        build_model(ArchSpec(**{**tv.__dict__, "torchvision_name": "no_such_net"}))
    if os.environ.get("LENSCAPE_OFFLINE"):
        with pytest.raises(InvalidInputError, match="upload a weights file"):
            torchvision_pretrained("resnet18")


@pytest.mark.parametrize(
    "fields",
    [
        {"name": "lenet"},
        {"name": "cnn", "channels": (8, 16), "batchnorm": True},
        {"name": "cnn", "channels": (32, 64), "batchnorm": False},
        {"name": "mlp", "widths": (40, 20)},
        {"name": "resnet9"},
    ],
)
def test_the_architecture_whose_keys_and_shapes_match_is_suggested(fields):
    from lenscape.models.loading import suggest_architecture

    shape = (3, 32, 32)
    model = build_model(ArchSpec(**fields, in_shape=shape, num_classes=10, mean=(0.5,) * 3, std=(0.5,) * 3))
    assert suggest_architecture(model.state_dict(), shape, 10) == fields
    assert suggest_architecture(model.state_dict(), shape, 7) is None  # other output size: no match
    assert suggest_architecture({"weight": torch.zeros(3)}, shape, 10) is None


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small", "vgg11"])
def test_a_torchvision_state_dict_is_recognized_by_name(name):
    import torchvision

    from lenscape.models.loading import suggest_architecture

    state = torchvision.models.get_model(name, weights=None, num_classes=10).state_dict()
    assert suggest_architecture(state, (3, 32, 32), 10) == {"name": "torchvision", "torchvision_name": name}


def test_each_torchvision_family_key_belongs_to_that_family_alone():
    """models.loading.TORCHVISION_FAMILIES against torchvision itself: every classifier but the
    RegNets has one of the keys, and only keys that point to its own family."""
    import torchvision

    from lenscape.models.loading import TORCHVISION_FAMILIES, torchvision_names

    for name in torchvision_names():
        if name.startswith("regnet"):
            continue
        with torch.device("meta"):
            keys = set(torchvision.models.get_model(name, weights=None, num_classes=10).state_dict())
        families = [f for key, f in TORCHVISION_FAMILIES.items() if key in keys]
        assert families and all(name.startswith(f) for f in families), (name, families)


@pytest.mark.skipif(not LENET.exists(), reason="needs shared/data")
def test_the_tutorial_lenet_is_recognized_and_gets_its_own_normalization():
    from lenscape.models.architectures import default_normalization
    from lenscape.models.loading import suggest_architecture

    assert suggest_architecture(read_state_dict(LENET.read_bytes()), (3, 32, 32), 10) == {"name": "lenet"}
    data_mean, data_std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
    assert default_normalization("lenet", data_mean, data_std) == ((0.5,) * 3, (0.5,) * 3)
    assert default_normalization("cnn", data_mean, data_std) == (data_mean, data_std)
    assert default_normalization("torchvision", data_mean, data_std)[0] == (0.485, 0.456, 0.406)


def test_fingerprint_sees_the_input_normalization():
    a = build_model(SPEC)
    b = model_from_state(ArchSpec(**{**SPEC.to_dict(), "mean": (0.5,), "std": (0.5,)}), a.state_dict())
    assert model_fingerprint(a) != model_fingerprint(b)
    assert model_fingerprint(a) == model_fingerprint(model_from_state(SPEC, a.state_dict()))


def test_importing_the_same_model_again_does_not_rename_it(tmp_path):
    from lenscape.models.zoo import AlreadyImported, get_run, import_model

    model = build_model(SPEC)
    first = import_model(model, SPEC, "first name", None, tuple("0123456789"), "imported", root=tmp_path)
    with pytest.raises(AlreadyImported, match="already in the workspace as 'first name'") as info:
        import_model(model, SPEC, "second name", None, tuple("0123456789"), "imported", root=tmp_path)
    assert info.value.record["run_id"] == first["run_id"]
    assert get_run(first["run_id"], root=tmp_path)["name"] == "first name"
    other = ArchSpec(**{**SPEC.to_dict(), "mean": (0.5,), "std": (0.5,)})
    again = import_model(
        model_from_state(other, model.state_dict()),
        other,
        "other normalization",
        None,
        tuple("0123456789"),
        "imported",
        root=tmp_path,
    )
    assert again["run_id"] != first["run_id"]
