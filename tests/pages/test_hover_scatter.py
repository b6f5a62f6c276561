import base64
import io

import numpy as np
import pytest
from PIL import Image

from ui.hover_scatter import _component_dir, sprite_sheet


def _decode(url: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))


def test_grey_sprite_holds_every_image_exactly_where_the_page_looks_for_it():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(10, 1, 7, 5), dtype=np.uint8)
    sprite = sprite_sheet(images, np.arange(100, 110))
    assert sprite.url.startswith("data:image/png;base64,")
    assert sprite.columns == 4 and sprite.tile == (5, 7) and sprite.indices == list(range(100, 110))
    sheet = _decode(sprite.url)
    assert sheet.shape == (3 * 7, 4 * 5)
    for k in range(10):  # the same arithmetic as index.html's background-position
        r, c = divmod(k, sprite.columns)
        assert np.array_equal(sheet[r * 7:(r + 1) * 7, c * 5:(c + 1) * 5], images[k, 0])


def test_colour_sprite_is_jpeg_and_close():
    rng = np.random.default_rng(1)
    images = np.repeat(rng.integers(0, 256, size=(3, 3, 1, 1), dtype=np.uint8), 16, axis=2).repeat(16, axis=3)
    sprite = sprite_sheet(images, np.arange(3))
    assert sprite.url.startswith("data:image/jpeg;base64,")
    sheet = _decode(sprite.url).astype(int)
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
