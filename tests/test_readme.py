"""The README's notebook example runs as it is written: CKA between two torchvision networks and a
saliency grid, with lenscape.analysis and no Streamlit server."""

import re
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parents[1] / "README.md"


def _notebook_block() -> str:
    text = README.read_text()
    section = text[text.index("## From a notebook") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_notebook_example_runs_and_draws_what_it_says(monkeypatch):
    import plotly.graph_objects as go

    shown = []
    monkeypatch.setattr(go.Figure, "show", lambda self, *a, **k: shown.append(self))
    scope: dict = {}
    exec(compile(_notebook_block(), "README.md", "exec"), scope)
    cka = scope["cka"]
    assert cka.shape == (4, 4) and np.isfinite(cka).all() and ((cka > 0) & (cka <= 1 + 1e-9)).all()
    assert not scope["notes"]
    # the figures the reader sees: the CKA values as a heat map, one grid column per method
    heat, grid = shown
    assert np.allclose(np.asarray(heat.data[0].z, dtype=float), cka)
    titles = {a.text for a in grid.layout.annotations}
    assert {"gradient", "integrated_gradients", "smoothgrad", "gradcam"} <= titles
    assert sum(1 for im in grid.layout.images) >= 3 * 4
