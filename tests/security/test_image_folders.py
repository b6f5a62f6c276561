"""Finding 11: image folders are walked without following symlink loops, with a bound on the number
of files and a cancel that works while walking; a damaged image is named; grayscale vs RGB is decided
over every image; an image over the pixel limit is refused before anything is decoded."""

import threading

import numpy as np
import PIL.ImageFile
import pytest
from PIL import Image

from lenscape.models.data import DataSpec, load_data, prepare
from lenscape.errors import InvalidInputError


@pytest.fixture(autouse=True)
def allowed(tmp_path, monkeypatch):
    monkeypatch.setenv("LENSCAPE_ALLOWED_ROOTS", str(tmp_path))


def _folder(root, classes=("cat", "dog"), n=2, side=6):
    for cls in classes:
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(np.full((side, side, 3), 50 * i % 256, dtype=np.uint8)).save(root / cls / f"{i}.png")
    return DataSpec(name="imagefolder", folder=str(root))


def _within(seconds: float, fn):
    """fn() in a thread, failing the test (the thread left behind) when it takes longer: the old walk
    of a symlink loop never ended."""
    out: dict = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            out["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"still walking after {seconds} s"
    if "error" in out:
        raise out["error"]
    return out["value"]


@pytest.fixture
def decoded(monkeypatch):
    """How many images were decoded (PIL's ImageFile.load) since the test began."""
    calls = []
    real = PIL.ImageFile.ImageFile.load
    monkeypatch.setattr(PIL.ImageFile.ImageFile, "load", lambda self: calls.append(1) or real(self))
    return calls


def test_two_links_up_the_tree_in_a_class_folder_end_with_the_right_count(tmp_path):
    spec = _folder(tmp_path / "imgs")
    (tmp_path / "imgs" / "cat" / "up1").symlink_to("..")
    (tmp_path / "imgs" / "cat" / "up2").symlink_to("..")
    (tmp_path / "imgs" / "dog" / "self").symlink_to(".")
    assert _within(20, lambda: prepare(spec)) == {str(tmp_path / "imgs"): 4}
    assert load_data(spec, "train").classes == ("cat", "dog")


def test_the_root_folder_is_refused_and_even_where_allowed_its_walk_is_bounded(monkeypatch):
    with pytest.raises(InvalidInputError, match="not allowed"):
        _within(10, lambda: prepare(DataSpec(name="imagefolder", folder="/")))
    monkeypatch.setenv("LENSCAPE_ALLOWED_ROOTS", "/")
    monkeypatch.setenv("LENSCAPE_MAX_FOLDER_FILES", "2000")
    with pytest.raises(InvalidInputError):
        _within(20, lambda: prepare(DataSpec(name="imagefolder", folder="/")))


def test_a_link_to_a_sibling_folder_is_followed_once_like_torchvision(tmp_path):
    spec = _folder(tmp_path / "imgs")
    (tmp_path / "imgs" / "cat" / "more").symlink_to(tmp_path / "imgs" / "dog")
    (tmp_path / "imgs" / "dog" / "back").symlink_to(tmp_path / "imgs" / "cat")  # and back: a loop
    assert _within(20, lambda: prepare(spec)) == {str(tmp_path / "imgs"): 8}


def test_the_number_of_files_is_bounded_and_the_message_says_how_to_raise_it(tmp_path, monkeypatch):
    spec = _folder(tmp_path / "imgs", n=15)
    monkeypatch.setenv("LENSCAPE_MAX_FOLDER_FILES", "20")
    with pytest.raises(InvalidInputError, match="more than 20 files") as err:
        prepare(spec)
    assert "LENSCAPE_MAX_FOLDER_FILES" in str(err.value)
    monkeypatch.setenv("LENSCAPE_MAX_FOLDER_FILES", "40")
    assert prepare(spec) == {str(tmp_path / "imgs"): 30}


class Cancelled(Exception):
    pass


def test_cancel_stops_the_walk_before_anything_is_decoded(tmp_path, decoded):
    spec = _folder(tmp_path / "imgs")
    for i in range(3000):  # not images: listed, never decoded
        (tmp_path / "imgs" / "cat" / f"notes-{i}.txt").touch()
    calls = []

    def progress(fraction, message):
        calls.append(message)
        if len(calls) == 3:
            raise Cancelled("the user pressed Cancel")

    with pytest.raises(Cancelled):
        _within(20, lambda: prepare(spec, progress))
    assert decoded == [] and all("listing" in m for m in calls)


@pytest.mark.parametrize("damage", ["not an image", "cut short"])
def test_a_damaged_image_is_named(tmp_path, damage):
    spec = _folder(tmp_path / "imgs", side=32)
    good = (tmp_path / "imgs" / "dog" / "0.png").read_bytes()
    bad = b"<html>not found</html>" if damage == "not an image" else good[: len(good) // 2]
    (tmp_path / "imgs" / "dog" / "sub").mkdir()
    (tmp_path / "imgs" / "dog" / "sub" / "broken.png").write_bytes(bad)
    with pytest.raises(InvalidInputError, match="cannot be read as an image") as err:
        load_data(spec, "train")
    assert "dog/sub/broken.png" in str(err.value)


def test_one_rgb_image_after_forty_grey_ones_makes_the_folder_rgb(tmp_path):
    for i in range(40):
        (tmp_path / "imgs" / "a").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((4, 4), 6 * i, dtype=np.uint8)).save(tmp_path / "imgs" / "a" / f"{i:02d}.png")
    (tmp_path / "imgs" / "b").mkdir()
    red = np.zeros((4, 4, 3), dtype=np.uint8)
    red[..., 0] = 200
    Image.fromarray(red).save(tmp_path / "imgs" / "b" / "red.png")
    spec = DataSpec(name="imagefolder", folder=str(tmp_path / "imgs"))
    prepare(spec)
    train, test = load_data(spec, "train"), load_data(spec, "test")
    assert train.images.shape[1:] == (3, 4, 4)
    every = [*train.images, *test.images]
    assert any(img[0].max() == 200 and img[1].max() == 0 for img in every)  # the red one stays red


@pytest.mark.parametrize("how", ["default limit", "limit from LENSCAPE_MAX_IMAGE_PIXELS"])
def test_an_image_over_the_pixel_limit_is_refused_before_decoding(tmp_path, monkeypatch, decoded, how):
    spec = _folder(tmp_path / "imgs")
    big = tmp_path / "imgs" / "dog" / "poster.png"
    if how == "default limit":
        Image.new("1", (6000, 6000)).save(big)  # 36 million pixels in a few KB
        size = "6,000×6,000"
    else:
        monkeypatch.setenv("LENSCAPE_MAX_IMAGE_PIXELS", "1000")
        Image.new("RGB", (40, 30)).save(big)
        size = "40×30"
    assert big.stat().st_size < 100_000
    with pytest.raises(InvalidInputError, match="LENSCAPE_MAX_IMAGE_PIXELS") as err:
        prepare(spec)
    assert "dog/poster.png" in str(err.value) and size in str(err.value) and decoded == []
