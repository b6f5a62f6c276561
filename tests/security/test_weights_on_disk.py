"""Finding 8: weights swapped on disk under an unchanged run.json are noticed when the model is
loaded (the fingerprint that keys every cached result is recomputed from the file, once per file
version), and a page says so instead of showing results of the old weights for the new ones."""

import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from streamlit.testing.v1 import AppTest

from lenscape.models.architectures import ArchSpec, build_model
from lenscape.models.data import DataSpec
from lenscape.errors import InvalidInputError
from lenscape.models.zoo import import_model, iter_states, load_model, load_state

ROOT = Path(__file__).resolve().parents[2]
ARCH = ArchSpec(name="mlp", widths=(16,), in_shape=(1, 8, 8), num_classes=10, mean=(0.3,), std=(0.3,))


@pytest.fixture
def swapped(lenscape_home):
    """A workspace model whose checkpoint file was then replaced by other weights of the same shapes."""
    torch.manual_seed(0)
    rec = import_model(build_model(ARCH), ARCH, "tiny", DataSpec(name="digits"), tuple(map(str, range(10))), "test")
    assert load_model(rec["run_id"]).fingerprint == rec["checkpoints"][0]["fingerprint"]  # honest: loads
    torch.manual_seed(1)
    other = {k: v.contiguous() for k, v in build_model(ARCH).state_dict().items()}
    time.sleep(0.01)  # a new modification time, as a later write has
    save_file(other, str(lenscape_home / "runs" / rec["run_id"] / "epoch_000.safetensors"))
    return rec


def test_swapped_weights_are_refused_by_every_loader(swapped):
    for load in (
        lambda: load_model(swapped["run_id"]),
        lambda: load_state(swapped["run_id"]),
        lambda: list(iter_states(swapped["run_id"])),
    ):
        with pytest.raises(InvalidInputError, match="not the ones recorded"):
            load()


def test_a_truncated_checkpoint_is_reported_not_raised_raw(swapped, lenscape_home):
    path = lenscape_home / "runs" / swapped["run_id"] / "epoch_000.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(InvalidInputError, match="cannot be read"):
        load_model(swapped["run_id"])


def test_a_page_on_a_swapped_model_says_so(swapped):
    from lenscape.ui.common import cached_model

    # a process that already holds this run's verified model (an earlier test of the same preset, in
    # the same worker) keeps serving it: the weights the fingerprint names. A fresh process reads the file.
    cached_model.clear()
    at = AppTest.from_file(str(ROOT / "pages" / "2_Saliency.py"), default_timeout=60)
    at.query_params["model"] = swapped["run_id"]
    at.run()
    assert not at.exception
    assert any("not the ones recorded" in e.value for e in at.error)


@pytest.mark.parametrize("run_id", ["../../../etc", "..", "a/b", "/tmp/x", "run-1\x00", ""])
def test_a_model_id_from_a_link_is_a_name_never_a_path(lenscape_home, tmp_path, run_id):
    outside = tmp_path / "etc"
    outside.mkdir()
    (outside / "run.json").write_text('{"status": "complete"}')
    with pytest.raises(InvalidInputError, match="not a model id"):
        load_model(run_id)
    from lenscape.models.zoo import delete_run

    with pytest.raises(InvalidInputError, match="not a model id"):
        delete_run(run_id)
    assert (outside / "run.json").exists()


def test_a_link_to_a_path_instead_of_a_model_is_refused_on_the_page(lenscape_home):
    at = AppTest.from_file(str(ROOT / "pages" / "2_Saliency.py"), default_timeout=60)
    at.query_params["model"] = "../../../../etc"
    at.run()
    assert not at.exception


def test_weights_rewritten_in_place_with_the_old_time_are_noticed(swapped, lenscape_home):
    """Same size, modification time set back: the change time (which no program can set) still moved."""
    import os

    from lenscape.models.zoo import get_run

    path = lenscape_home / "runs" / swapped["run_id"] / "epoch_000.safetensors"
    torch.manual_seed(0)
    from safetensors.torch import save

    honest = save({k: v.contiguous() for k, v in build_model(ARCH).state_dict().items()})
    path.write_bytes(honest)  # the honest weights back: loads
    assert load_model(swapped["run_id"]).fingerprint == get_run(swapped["run_id"])["checkpoints"][0]["fingerprint"]
    st = path.stat()
    raw = bytearray(honest)
    raw[-1] ^= 0x40  # one weight's bit, in place
    time.sleep(0.01)
    path.write_bytes(bytes(raw))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns
    with pytest.raises(InvalidInputError, match="not the ones recorded"):
        load_model(swapped["run_id"])
