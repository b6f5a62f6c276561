"""The saliency job: its progress moves while the maps are computed (chunk by chunk, method by
method), and it explains training images with their true labels."""

import tempfile

import numpy as np
import torch

from lenscape.analysis.saliency import SaliencyConfig
from lenscape.backend.jobs import JobContext, ref
from lenscape.backend.saliency_tasks import GridConfig, saliency_job
from lenscape.models.zoo import load_model


def test_progress_moves_with_every_chunk_of_every_method(trained_run):
    (rec,) = trained_run("digits-mlp", epochs=2)
    lm = load_model(rec["run_id"])
    seen = []
    ctx = JobContext(
        job_id="t",
        device=torch.device("cpu"),
        workdir=tempfile.mkdtemp(),
        on_progress=lambda p: seen.append((p.fraction, p.message)),
    )
    methods = tuple(SaliencyConfig(method=m, batch_size=4) for m in ("gradient", "integrated_gradients"))
    res = saliency_job(ctx, GridConfig(model=ref(lm), indices=tuple(range(10)), methods=methods))
    assert [r.attributions.shape for r in res] == [(10, 1, 8, 8)] * 2
    fractions = [f for f, _ in seen]
    # one piece per method (10 images fit one piece), three chunks of 4, 4, 2 images in each, each
    # heard: .2, .4, .5, then the piece done (.5) | .7, .9, 1, the piece done (1)
    assert np.allclose(fractions, [0.2, 0.4, 0.5, 0.5, 0.7, 0.9, 1.0, 1.0])
    assert fractions == sorted(fractions)
    assert seen[1][1] == "2 methods on 10 images (0/2 pieces done) · Gradient (logit): 8/10 images"
    assert seen[5][1].endswith("(1/2 pieces done) · Integrated Gradients: 8/10 images")
