"""The PNG montage (data-set previews, level-set paths): images scaled by nearest neighbour with
their aspect kept, each under its title."""

import io

import numpy as np
import pytest
from PIL import Image

from lenscape.ui.figures import montage_png


def test_montage_keeps_the_aspect_and_the_pixels():
    g = np.random.default_rng(0)
    tall = g.random((3, 1, 56, 28))  # BlockMNIST-shaped
    png = Image.open(io.BytesIO(montage_png([tall[:2], tall[2:]], [["a", "b"], ["c"]], tile=112)))
    head, pad, th, tw = 16, 4, 112, 56
    assert png.size == (2 * (tw + pad) + pad, 2 * (th + head + pad) + pad)
    arr = np.asarray(png.convert("L")).astype(int)
    # image 0 sits at (pad, pad + head), each pixel a 2×2 block of the scaled-up original
    block = arr[pad + head : pad + head + th, pad : pad + tw]
    expected = np.repeat(np.repeat((tall[0, 0] * 255).round(), 2, 0), 2, 1)
    assert np.abs(block - expected).max() <= 1
    wide = montage_png([g.random((1, 3, 8, 16))], [["x"]], tile=64)
    assert Image.open(io.BytesIO(wide)).size == (64 + 2 * pad, 32 + head + 2 * pad)


def _picture_pixels(picture: dict) -> np.ndarray:
    import base64

    head, data = picture["source"].split(",", 1)
    assert head == "data:image/png;base64"
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")).astype(int)


@pytest.mark.parametrize(
    "shape, n, cols, per_row",
    [((1, 8, 8), 32, 16, 100), ((3, 32, 32), 24, 8, 140), ((1, 56, 28), 5, 10, 170), ((3, 8, 16), 3, 8, 90)],
)
def test_an_image_grid_is_one_figure_of_pictures_in_rows_each_under_its_title(shape, n, cols, per_row):
    """Every image is one picture, its aspect and pixels kept (pixels repeated, not blurred), placed
    left to right and top to bottom without overlapping, no wider than the main column, with its
    title centred just above it: one pair of hidden axes, whatever the number of images."""
    from lenscape.ui.figures import MAIN_WIDTH, image_grid

    images = np.random.default_rng(n).random((n, *shape))
    titles = [f"t{i}" for i in range(n)]
    fig = image_grid(images, titles, cols=cols, height_per_row=per_row)
    lay = fig.layout
    assert len(fig.data) == 0 and "xaxis2" not in lay and not lay.xaxis.visible
    assert lay.width <= MAIN_WIDTH and lay.height > 0
    pictures, notes = lay.images, lay.annotations
    assert len(pictures) == n and [a.text for a in notes] == titles
    boxes = []  # (left, top, right, bottom) in pixels from the top left
    for i, (pic, note) in enumerate(zip(pictures, notes)):
        left, top = pic.x * lay.width, (1 - pic.y) * lay.height
        wide, tall = pic.sizex * lay.width, pic.sizey * lay.height
        assert abs(wide / tall - shape[2] / shape[1]) < 0.05  # aspect kept
        boxes.append((left, top, left + wide, top + tall))
        assert abs(note.x * lay.width - (left + wide / 2)) < 1e-6  # centred over its picture
        assert note.yanchor == "bottom" and abs((1 - note.y) * lay.height - (top - 2)) < 1e-6  # just above it
        px = _picture_pixels(pic)
        k = px.shape[0] // shape[1]
        assert px.shape[:2] == (k * shape[1], k * shape[2]) and k >= 1  # whole repeats of every pixel
        want = (images[i].transpose(1, 2, 0) * 255).round()
        want = np.repeat(np.repeat(want, k, 0), k, 1)
        assert np.abs(px - (want if shape[0] == 3 else np.repeat(want, 3, 2))).max() <= 1
    for i, a in enumerate(boxes):  # reading order, no overlap, inside the figure
        assert a[0] >= 0 and a[2] <= lay.width + 1e-6 and a[1] >= 0 and a[3] <= lay.height + 1e-6
        row, col = divmod(i, min(cols, n))
        if col:
            prev = boxes[i - 1]
            assert a[0] > prev[2] and a[1] == prev[1]  # right of the one before, same row
        elif row:
            above = boxes[i - min(cols, n)]
            assert a[1] > above[3] + 12 and a[0] == above[0]  # a row lower, room for the title between
