"""The Maps grid: the image first, Captum's normalization per map or shared, colour bars in
attribution units, and PNG/PDF files that say what they show."""

import io

import numpy as np
import pytest
from PIL import Image

from lenscape.analysis.visualization import threshold
from lenscape.ui.saliency_figs import WIDTH, Display, attribution_grid, grid_file, model_facts, what_differs


def _cells():
    g = np.random.default_rng(0)
    images = g.random((2, 3, 6, 6))
    cells = [[g.normal(size=(3, 6, 6)), 10 * g.normal(size=(3, 6, 6))] for _ in range(2)]
    return images, cells


def _boxes(fig) -> list[tuple[float, float, float, float]]:
    """Each picture of the grid as (left, top, width, height) in pixels from the figure's top left."""
    W, H = fig.layout.width, fig.layout.height
    return [(i.x * W, (1 - i.y) * H, i.sizex * W, i.sizey * H) for i in fig.layout.images]


def _texts(fig) -> list[str]:
    return [a.text for a in fig.layout.annotations]


def test_grid_rows_start_with_the_image_and_bars_are_in_attribution_units():
    images, cells = _cells()
    fig = attribution_grid(images, cells, ["#0 · true cat", "#1 · true dog"], ["Gradient", "IG"], Display())
    pictures = _boxes(fig)
    assert len(pictures) == 2 * (1 + 2 * 2)  # per row: the image, and each map with its bar
    assert pictures[0][:2] == (0, pictures[1][1])  # the image first, level with the maps
    lim = threshold([np.abs(cells[0][1].sum(0))], 2)
    texts = _texts(fig)
    assert texts[:2] == ["#0 · true cat", "Gradient"] and "IG" in texts and "#1 · true dog" in texts
    assert f"{lim:.2g}" in texts  # IG's own range, from Captum's rule
    shared = attribution_grid(images, cells, ["a", "b"], ["Gradient", "IG"], Display(sign="all", shared=True))
    assert len(_boxes(shared)) == 2 * 3 + 1  # one bar for all
    top = threshold([c.sum(0) for row in cells for c in row], 2)
    assert {f"{-top:.2g}", "0", f"{top:.2g}"} <= set(_texts(shared))


def test_nine_methods_wrap_onto_rows_with_maps_bars_and_titles_that_fit():
    """Issue 23, 6: with 9 methods the maps stay at least 96 px wide in the 920-px figure (a 1,400-px
    window), each bar exactly as tall as its map, and no two titles of a row overlap."""
    g = np.random.default_rng(2)
    images = g.random((3, 1, 8, 8))
    cells = [[g.normal(size=(1, 8, 8)) for _ in range(9)] for _ in range(3)]
    names = [
        "Gradient (logit)",
        "Gradient (loss)",
        "Gradient × input",
        "SmoothGrad",
        "VarGrad",
        "Integrated Gradients",
        "Guided Backprop",
        "DeepLift",
        "Occlusion",
    ]
    for d in (Display(), Display(shared=True, mode="heat map")):
        fig = attribution_grid(images, cells, ["#0<br>pred 3 99%", "#1", "#2"], names, d)
        assert fig.layout.width == WIDTH == 920
        maps = [b for b in _boxes(fig) if b[2] > 20]
        strips = [b for b in _boxes(fig) if b[2] <= 20]
        assert len(maps) == 3 * 10 and min(w for _, _, w, _ in maps) >= 96
        assert all(x + w <= WIDTH + 1e-6 for x, _, w, _ in _boxes(fig))
        assert {round(h, 6) for *_, h in strips} == {round(maps[0][3], 6)}  # bars as tall as the maps
        # titles: one row of titles at a time; neighbours at least a map's width apart, each line short enough
        titles = [a for a in fig.layout.annotations if a.text in names or "<br>" in a.text and a.xanchor == "center"]
        by_row: dict[float, list[float]] = {}
        for a in titles:
            by_row.setdefault(round(a.y, 6), []).append(a.x * WIDTH)
            assert max(len(line) for line in a.text.split("<br>")) * 7 <= maps[0][2] + 50
        for xs in by_row.values():
            xs.sort()
            assert all(b - a >= maps[0][2] for a, b in zip(xs, xs[1:]))


def test_a_comparison_starts_each_models_maps_on_a_row():
    g = np.random.default_rng(3)
    images = g.random((1, 1, 8, 8))
    cells = [[g.normal(size=(1, 8, 8)) for _ in range(6)]]
    cols = [f"{t} · M{i}" for t in "AB" for i in range(3)]
    fig = attribution_grid(images, cells, ["#0"], cols, Display(), group=3)
    rows = sorted(
        {round((1 - a.y) * fig.layout.height) for a in fig.layout.annotations if a.text.startswith(("A", "B"))}
    )
    assert len(rows) == 2  # A's three maps, then B's under them
    column = {a.text: round(a.x, 6) for a in fig.layout.annotations}
    assert column["A · M1"] == column["B · M1"]


def test_png_and_pdf_name_the_model_method_and_parameters():
    images, cells = _cells()
    about = {"models": "CNN seed 0 (run-1, epoch 3)", "methods": "Gradient (target predicted)", "images": "test 0, 1"}
    png = grid_file(images, cells, ["a", "b"], ["Gradient", "IG"], Display(), about, "png")
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG" and "run-1, epoch 3" in img.info["Description"]
    pdf = grid_file(images, cells, ["a", "b"], ["Gradient", "IG"], Display(mode="heat map"), about, "pdf")
    assert pdf.startswith(b"%PDF") and b"Lenscape saliency maps" in pdf


def _record(arch: str, config: dict | None, **arch_fields) -> dict:
    return {"arch": {"name": arch, "mean": [0.5] * 3, **arch_fields}, "config": config, "data": {"name": "cifar10"}}


def test_the_legend_names_only_real_differences():
    """Issue 23, 4: two CIFAR-10 LeNets, one imported and one trained here, differ in how they were
    made (and the trained one's recipe), not in their names' words."""
    recipe = {
        "epochs": 4,
        "seed": 0,
        "label_noise": 0.0,
        "adversarial": None,
        "lr": 0.05,
        "batch_size": 128,
        "schedule": "cosine",
        "train_subset": 0,
    }
    common, own = what_differs([model_facts(_record("lenet", None), 0), model_facts(_record("lenet", recipe), 4)])
    assert common == ["CIFAR-10", "LeNet"] and own == [["imported"], ["trained here", "4 epochs", "seed 0"]]
    pgd = {**recipe, "seed": 1, "adversarial": {"norm": "l2", "eps": 0.5, "steps": 7}}
    common, own = what_differs(
        [model_facts(_record("mlp", recipe, widths=[256]), 4), model_facts(_record("mlp", pgd, widths=[256]), 4)]
    )
    assert common == ["CIFAR-10", "MLP 256", "trained here", "4 epochs"]
    assert own == [["seed 0", "standard training"], ["seed 1", "PGD-l2 ε 0.5"]]
    _, own = what_differs(
        [model_facts(_record("cnn", recipe), 4), model_facts(_record("cnn", {**recipe, "lr": 0.1}), 2)]
    )
    assert own == [["lr 0.05"], ["at epoch 2", "lr 0.1"]]


def test_outlines_box_the_signal_block_of_each_row_in_every_column():
    g = np.random.default_rng(1)
    images = g.random((2, 1, 8, 4))  # BlockMNIST-like: tall, two blocks of 4 rows
    cells = [[g.normal(size=(1, 8, 4))] for _ in range(2)]
    fig = attribution_grid(
        images,
        cells,
        ["#0 · signal top", "#1 · signal bottom"],
        ["Gradient"],
        Display(mode="heat map"),
        outlines=[(0, 4), (4, 8)],
    )
    pictures, H = _boxes(fig), fig.layout.height
    boxes = [(s.x0 * WIDTH, (1 - s.y1) * H, s.x1 * WIDTH, (1 - s.y0) * H) for s in fig.layout.shapes]
    # row 0: the image and the map boxed over their top half (pixel rows 0..3); row 1 over the bottom half
    for (x, top, w, h), (x0, y0, x1, y1), half in zip([p for p in pictures if p[2] > 20], boxes, (0, 0, 1, 1)):
        assert (x0, x1) == pytest.approx((x, x + w))
        assert (y0, y1) == pytest.approx((top + half * h / 2, top + (half + 1) * h / 2))
    plain = attribution_grid(images, cells, ["a", "b"], ["Gradient"], Display(), outlines=[None, (0, 4)])
    assert len(plain.layout.shapes) == 2
