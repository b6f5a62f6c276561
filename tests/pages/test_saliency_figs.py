"""The Maps grid: the image first, Captum's normalization per map or shared, colour bars in
attribution units, and PNG/PDF files that say what they show."""

import io

import numpy as np
import plotly.graph_objects as go
from PIL import Image

from analysis.visualization import threshold
from ui.saliency_figs import Display, attribution_grid, grid_file, model_facts, what_differs


def _cells():
    g = np.random.default_rng(0)
    images = g.random((2, 3, 6, 6))
    cells = [[g.normal(size=(3, 6, 6)), 10 * g.normal(size=(3, 6, 6))] for _ in range(2)]
    return images, cells


def test_grid_rows_start_with_the_image_and_bars_are_in_attribution_units():
    images, cells = _cells()
    fig = attribution_grid(images, cells, ["#0 · true cat", "#1 · true dog"], ["Gradient", "IG"], Display())
    assert isinstance(fig.data[0], go.Image) and fig.data[0].z.shape == (6, 6, 3)
    maps = [t for t in fig.data if isinstance(t, go.Heatmap) and t.colorscale[0][1] != "rgb(0, 0, 0)" and t.showscale]
    assert len(maps) == 4                                               # a colour bar per map
    lim = threshold([np.abs(cells[0][1].sum(0))], 2)
    assert maps[1].colorbar.ticktext == ("0", f"{lim:.2g}")             # IG's own range, from Captum's rule
    titles = [a.text for a in fig.layout.annotations]
    assert titles[:3] == ["#0 · true cat", "Gradient", "IG"] and "#1 · true dog" in titles

    shared = attribution_grid(images, cells, ["a", "b"], ["Gradient", "IG"], Display(sign="all", shared=True))
    bars = [t for t in shared.data if isinstance(t, go.Heatmap) and t.showscale]
    assert len(bars) == 1 and bars[0].zmin == -1
    top = threshold([c.sum(0) for row in cells for c in row], 2)
    assert bars[0].colorbar.ticktext == (f"{-top:.2g}", "0", f"{top:.2g}")


def test_png_and_pdf_name_the_model_method_and_parameters():
    images, cells = _cells()
    about = {"models": "CNN seed 0 (run-1, epoch 3)", "methods": "Gradient (target predicted)", "images": "test 0, 1"}
    png = grid_file(images, cells, ["a", "b"], ["Gradient", "IG"], Display(), about, "png")
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG" and "run-1, epoch 3" in img.info["Description"]
    pdf = grid_file(images, cells, ["a", "b"], ["Gradient", "IG"], Display(mode="heat map"), about, "pdf")
    assert pdf.startswith(b"%PDF") and b"Lenscape saliency maps" in pdf


def _record(arch: str, config: dict | None, **arch_fields) -> dict:
    return {"arch": {"name": arch, "mean": [0.5] * 3, **arch_fields}, "config": config,
            "data": {"name": "cifar10"}}


def test_the_legend_names_only_real_differences():
    """Issue 23, 4: two CIFAR-10 LeNets, one imported and one trained here, differ in how they were
    made (and the trained one's recipe), not in their names' words."""
    recipe = {"epochs": 4, "seed": 0, "label_noise": 0.0, "adversarial": None, "lr": 0.05, "batch_size": 128,
              "schedule": "cosine", "train_subset": 0}
    common, own = what_differs([model_facts(_record("lenet", None), 0), model_facts(_record("lenet", recipe), 4)])
    assert common == ["CIFAR-10", "LeNet"] and own == [["imported"], ["trained here", "4 epochs", "seed 0"]]
    pgd = {**recipe, "seed": 1, "adversarial": {"norm": "l2", "eps": 0.5, "steps": 7}}
    common, own = what_differs([model_facts(_record("mlp", recipe, widths=[256]), 4),
                                model_facts(_record("mlp", pgd, widths=[256]), 4)])
    assert common == ["CIFAR-10", "MLP 256", "trained here", "4 epochs"]
    assert own == [["seed 0", "standard training"], ["seed 1", "PGD-l2 ε 0.5"]]
    _, own = what_differs([model_facts(_record("cnn", recipe), 4), model_facts(_record("cnn", {**recipe, "lr": 0.1}), 2)])
    assert own == [["lr 0.05"], ["at epoch 2", "lr 0.1"]]


def test_outlines_box_the_signal_block_of_each_row_in_every_column():
    g = np.random.default_rng(1)
    images = g.random((2, 1, 8, 4))                       # BlockMNIST-like: tall, two blocks of 4 rows
    cells = [[g.normal(size=(1, 8, 4))] for _ in range(2)]
    fig = attribution_grid(images, cells, ["#0 · signal top", "#1 · signal bottom"], ["Gradient"],
                           Display(mode="heat map"), outlines=[(0, 4), (4, 8)])
    boxes = [(s.xref, s.y0, s.y1) for s in fig.layout.shapes]
    # row 0: the image (x) and the map (x2) boxed over rows 0..3; row 1: x3 and x4 over rows 4..7
    assert boxes == [("x", -0.5, 3.5), ("x2", -0.5, 3.5), ("x3", 3.5, 7.5), ("x4", 3.5, 7.5)]
    assert all(s.x0 == -0.5 and s.x1 == 3.5 for s in fig.layout.shapes)
    plain = attribution_grid(images, cells, ["a", "b"], ["Gradient"], Display(), outlines=[None, (0, 4)])
    assert [s.xref for s in plain.layout.shapes] == ["x3", "x4"]
