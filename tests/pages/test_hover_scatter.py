import io
import os

import numpy as np
import pytest
from PIL import Image

from lenscape.ui.hover_scatter import _component_dir, _prune, _publish, images_to_keep, sprite_sheet


def _decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def test_grey_sprite_holds_every_image_exactly_where_the_page_looks_for_it():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(10, 1, 7, 5), dtype=np.uint8)
    sprite = sprite_sheet(images, np.arange(100, 110))
    assert sprite.suffix == ".png" and sprite.data.startswith(b"\x89PNG")
    assert sprite.columns == 4 and sprite.tile == (5, 7) and sprite.indices == list(range(100, 110))
    sheet = _decode(sprite.data)
    assert sheet.shape == (3 * 7, 4 * 5)
    for k in range(10):  # the same arithmetic as index.html's background-position
        r, c = divmod(k, sprite.columns)
        assert np.array_equal(sheet[r * 7 : (r + 1) * 7, c * 5 : (c + 1) * 5], images[k, 0])


def test_colour_sprite_is_jpeg_and_close():
    rng = np.random.default_rng(1)
    images = np.repeat(rng.integers(0, 256, size=(3, 3, 1, 1), dtype=np.uint8), 16, axis=2).repeat(16, axis=3)
    sprite = sprite_sheet(images, np.arange(3))
    assert sprite.suffix == ".jpg"
    sheet = _decode(sprite.data).astype(int)
    assert np.abs(sheet[4:12, 20:28] - images[1, :, 0, 0]).max() < 12  # flat colour patches survive JPEG


def test_bad_images_refused():
    with pytest.raises(ValueError, match="uint8"):
        sprite_sheet(np.zeros((2, 2, 4, 4), dtype=np.uint8), np.arange(2))
    with pytest.raises(ValueError, match="uint8"):
        sprite_sheet(np.zeros((2, 1, 4, 4)), np.arange(2))


def test_component_folder_serves_our_page_and_a_local_plotly():
    folder = _component_dir()
    assert "plotly_hover" in (folder / "index.html").read_text()
    assert (folder / "plotly.min.js").stat().st_size > 1_000_000
    (folder / "index.html").write_text("stale")
    assert "plotly_hover" in (_component_dir() / "index.html").read_text()  # refreshed when it differs


def test_panel_files_are_content_addressed_and_pruned_oldest_first(tmp_path):
    a = _publish(tmp_path, b"one", ".json")
    assert a == _publish(tmp_path, b"one", ".json") != _publish(tmp_path, b"two", ".json")
    assert (tmp_path / a).read_bytes() == b"one" and a.startswith("files/") and a.endswith(".json")
    folder = tmp_path / "prune"
    names = [_publish(folder, f"x{i}".encode(), ".json") for i in range(5)]
    for age, name in enumerate(reversed(names)):  # names[-1] newest
        os.utime(folder / name, (1e9 - age * 100, 1e9 - age * 100))
    _prune(folder, keep=2)
    assert sorted(p.name for p in (folder / "files").iterdir()) == sorted(n.split("/")[1] for n in names[-2:])


def test_thumbnail_budget_scales_with_image_size():
    assert images_to_keep((1, 28, 28)) > 20_000 > images_to_keep((1, 56, 28)) > 10_000  # MNIST, BlockMNIST
    assert 5_000 < images_to_keep((3, 32, 32)) < 5_300 and images_to_keep((3, 4000, 4000)) == 1
