"""Reliability probes where a user meets them, on the real pages: hostile and broken model files,
a damaged stored result, and a workspace that cannot be written."""

import io
import os
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import save
from streamlit.testing.v1 import AppTest

from apphelpers import MODELS_PAGE, ROOT_APP, open_tab, run_until, shown


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))  # unpickling this creates the file: "code execution"


def _digits_mlp_state(widths=(32,)):
    from lenscape.models.architectures import ArchSpec, build_model

    spec = ArchSpec(name="mlp", in_shape=(1, 8, 8), num_classes=10, mean=(0.3,), std=(0.4,), widths=widths)
    return {k: v.contiguous() for k, v in build_model(spec, seed=0).state_dict().items()}


def _files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, what the page must say)."""
    marker = tmp_path / "pwned"
    evil = io.BytesIO()
    torch.save({"fc1.weight": torch.zeros(2), "x": _Payload(str(marker))}, evil)
    good = save(_digits_mlp_state())
    wrong = _digits_mlp_state()
    wrong["fc1.weight"] = torch.zeros(7, 3)  # a shape no MLP on 8x8 digits has
    out = {
        "evil.pt": (evil.getvalue(), "refused"),
        "empty.safetensors": (b"", "not a model file"),
        "half.safetensors": (good[: len(good) // 2], "truncated"),
        "wrong.safetensors": (save(wrong), "fc1.weight"),
    }
    paths = {}
    for name, (raw, says) in out.items():
        (tmp_path / name).write_bytes(raw)
        paths[name] = (tmp_path / name, says)
    return paths


@pytest.mark.parametrize("name", ["evil.pt", "empty.safetensors", "half.safetensors", "wrong.safetensors"])
def test_hostile_and_broken_files_imported_by_path_are_refused_with_a_reason(tmp_path, name):
    path, says = _files(tmp_path)[name]
    at = open_tab(AppTest.from_file(MODELS_PAGE, default_timeout=60).run(), "Import")
    at.radio(key="models.load.source").set_value("A file on this machine").run()
    at.text_input(key="models.load.path").set_value(str(path)).run()
    run = at.button(key="models.load.run")
    if not run.disabled:  # readable files can be tried: the import itself refuses
        run.click().run()
    text = shown(" ".join(m.value for m in [*at.error, *at.warning, *at.caption]))
    assert says in text, text
    assert not at.exception
    assert not (tmp_path / "pwned").exists()  # the pickle's code never ran
    from lenscape.models.zoo import list_runs

    assert list_runs() == []  # nothing half-imported


def test_a_stored_result_with_flipped_bytes_is_computed_again_not_shown_broken(trained_run):
    (rec,) = trained_run("digits-mlp", epochs=2)
    at = open_tab(AppTest.from_file(MODELS_PAGE, default_timeout=60).run(), "Workspace models")
    run_until(at, lambda a: any(m.label == "Test accuracy" for m in a.metric))
    acc = next(m.value for m in at.metric if m.label == "Test accuracy")
    from lenscape.ui.common import backend

    store = backend().store
    (row,) = [r for r in store.list("model_summary") if r["status"] == "DONE"]
    raw = bytearray(store.path(row["id"]).read_bytes())
    raw[len(raw) // 3] ^= 0xFF
    store.path(row["id"]).write_bytes(bytes(raw))
    backend()._results.clear()  # as after a restart: nothing decoded in memory
    at.run()
    run_until(at, lambda a: any(m.label == "Test accuracy" for m in a.metric))
    assert next(m.value for m in at.metric if m.label == "Test accuracy") == acc
    assert not at.exception and not at.error
    assert store.get(row["id"])["status"] == "DONE" and store.has_valid_result(row["id"])


def _read_only(path: Path):
    """Make `path` a folder that cannot be written: a read-only mount for root (who ignores
    permissions), permissions for anyone else. None where neither can be had."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        path.chmod(0o555)
        return lambda: path.chmod(0o755)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)], capture_output=True)
    if done.returncode:
        return None
    return lambda: subprocess.run(["umount", str(path)], check=False)


def test_a_read_only_workspace_is_explained_on_every_page(tmp_path, monkeypatch):
    home = tmp_path / "home"
    undo = _read_only(home)
    if undo is None:
        pytest.skip("cannot make a read-only folder here (root without mount)")
    try:
        with pytest.raises(OSError):
            (home / "probe").write_text("x")
        monkeypatch.setenv("LENSCAPE_HOME", str(home))
        for page in (ROOT_APP, MODELS_PAGE):
            at = AppTest.from_file(page, default_timeout=60).run()
            assert not at.exception
            message = " ".join(e.value for e in at.error)
            assert "cannot write to its workspace" in message and "LENSCAPE_HOME" in message, message
    finally:
        undo()
