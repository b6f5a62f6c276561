"""The PNG montage (data-set previews, level-set paths): images scaled by nearest neighbour with
their aspect kept, each under its title."""

import io

import numpy as np
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
