"""Finding 10: paths typed in a page ("a file on this machine", the torchvision weights path, an
ImageFolder root) are limited to the allowed roots, refused without revealing anything about the
file, sized before they are read, and never end in a traceback."""

import os
import re
import resource
import time

import numpy as np
import pytest
from PIL import Image

from lenscape.models.data import DataSpec, is_prepared, load_data
from lenscape.errors import InvalidInputError

SECRET = b"root:$6$s3cr3t-hash:19000:0:99999:7:::\n"


@pytest.fixture
def allowed(tmp_path, monkeypatch):
    """An allowed root (as LENSCAPE_ALLOWED_ROOTS) beside an outside folder holding a secret file."""
    root = tmp_path / "allowed"
    root.mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "shadow").write_bytes(SECRET)
    monkeypatch.setenv("LENSCAPE_ALLOWED_ROOTS", str(root))
    return root


def _refusal(fn, text: str) -> str:
    with pytest.raises(InvalidInputError) as err:
        fn(text)
    return str(err.value).replace(text, "<path>")


def _read(text):
    from lenscape.ui.loading import _read

    return _read(None, text)


def test_a_file_outside_the_roots_is_refused_the_same_whether_it_exists_or_not(allowed, tmp_path):
    exists, missing = str(tmp_path / "outside" / "shadow"), str(tmp_path / "outside" / "nothing")
    said = _refusal(_read, exists)
    assert said == _refusal(_read, missing)
    assert "not allowed" in said and str(allowed) in said and "LENSCAPE_ALLOWED_ROOTS" in said
    assert "s3cr3t" not in said and "$6$" not in said


def test_the_import_forms_preview_refuses_alike_and_reads_nothing(allowed, tmp_path, monkeypatch):
    from lenscape import ui
    import lenscape.ui.loading  # noqa: F401

    shown = []
    unescaped = lambda md: re.sub(r"\\(.)", r"\1", md.replace("\u2060", ""))  # noqa: E731 - as a reader sees it
    monkeypatch.setattr(ui.loading.st, "error", lambda msg, **kw: shown.append(unescaped(msg)))
    for name in ("shadow", "nothing"):
        text = str(tmp_path / "outside" / name)
        assert ui.loading._suggestion(None, text, (1, 8, 8), 10) is False
        shown[-1] = shown[-1].replace(text, "<path>")
    assert len(shown) == 2 and shown[0] == shown[1] and "not allowed" in shown[0]


def test_a_link_inside_a_root_that_leads_outside_is_refused(allowed, tmp_path):
    (allowed / "weights.pt").symlink_to(tmp_path / "outside" / "shadow")
    assert "not allowed" in _refusal(_read, str(allowed / "weights.pt"))


def test_the_data_root_the_workspace_and_configured_roots_are_allowed(allowed, tmp_path, monkeypatch):
    from lenscape.models.paths import allowed_roots, data_root, home_dir, user_path

    other = tmp_path / "other"
    monkeypatch.setenv("LENSCAPE_ALLOWED_ROOTS", os.pathsep.join([str(allowed), "", str(other)]))
    roots = allowed_roots()
    assert roots[:2] == [data_root().resolve(), home_dir().resolve()] and roots[2:] == [allowed, other]
    assert user_path(str(other / "x" / ".." / "m.pt"), "the file") == other / "m.pt"
    assert "not allowed" in _refusal(lambda t: user_path(t, "the file"), str(tmp_path / "other-not"))
    assert "not allowed" in _refusal(lambda t: user_path(t, "the file"), str(allowed / ".." / "outside"))


@pytest.mark.parametrize("kind", ["proc-mem", "no-permission"])
def test_an_unreadable_file_is_an_input_error_not_a_traceback(allowed, monkeypatch, kind):
    if kind == "proc-mem":  # a /proc file that even root cannot read from the start (EIO)
        monkeypatch.setenv("LENSCAPE_ALLOWED_ROOTS", f"{allowed}{os.pathsep}/proc")
        text = "/proc/self/mem"
    else:
        if os.geteuid() == 0:
            pytest.skip("root reads a file without permissions")
        (allowed / "locked.pt").write_bytes(b"PK" + bytes(100))
        (allowed / "locked.pt").chmod(0)
        text = str(allowed / "locked.pt")
    assert "cannot be read" in _refusal(_read, text)


def test_a_huge_file_is_refused_from_its_size_before_a_byte_is_read(allowed):
    huge = allowed / "huge.pt"
    with open(huge, "wb") as f:
        f.truncate(3 << 30)  # sparse: 3 GiB that cost no disk
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    start = time.perf_counter()
    said = _refusal(_read, str(huge))
    assert time.perf_counter() - start < 1.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak < 256 * 1024
    assert "3,072 MiB" in said and "limit is 1024 MiB" in said


def _image_folder(root):
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((6, 6, 3), 40 * i, dtype=np.uint8)).save(root / cls / f"{i}.png")


def test_an_image_folder_outside_the_roots_is_refused_the_same_whether_it_exists_or_not(allowed, tmp_path):
    _image_folder(tmp_path / "outside" / "imgs")
    said = []
    for name in ("imgs", "nothing"):
        spec = DataSpec(name="imagefolder", folder=str(tmp_path / "outside" / name))
        said.append(_refusal(lambda t, spec=spec: load_data(spec, "train"), spec.folder))
        assert said[-1] == _refusal(lambda t, spec=spec: is_prepared(spec), spec.folder)
    assert said[0] == said[1] and "not allowed" in said[0]


def test_an_image_folder_inside_a_root_loads(allowed):
    _image_folder(allowed / "imgs")
    train = load_data(DataSpec(name="imagefolder", folder=str(allowed / "imgs")), "train")
    assert train.classes == ("cat", "dog") and train.images.shape[1:] == (3, 6, 6)
