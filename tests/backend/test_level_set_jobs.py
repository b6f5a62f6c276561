"""The level-set job on a digits CNN trained by the backend."""

import numpy as np
import pytest
import torch

from lenscape.analysis.level_sets import LSTConfig, triangle
from lenscape.backend.jobs import job, ref
from lenscape.backend.level_set_tasks import TraversalConfig
from lenscape.models.data import DataSpec, load_data
from lenscape.errors import InvalidInputError
from lenscape.models.zoo import load_model


def test_traversal_star_and_triangles(runner, trained_run, wait_for_job):
    (rec,) = trained_run("digits-cnn", epochs=8)
    lm = load_model(rec["run_id"])
    test = load_data(DataSpec(name="digits"), "test")
    with torch.no_grad():
        pred = lm.model(test.x()).argmax(1)
    ok = torch.nonzero(pred == test.labels).flatten()
    src = int(ok[0])
    targets = tuple(int(i) for i in ok[test.labels[ok] != test.labels[src]][:3])
    r = ref(lm)
    res = wait_for_job(
        runner.submit(
            job(
                "level_set_traversal",
                TraversalConfig(model=r, source=src, targets=targets, lst=LSTConfig(steps=30, delta=0.2)),
                (r,),
            )
        )
    )
    assert res.label == int(test.labels[src]) and res.lst.output.shape == (3, 1, 8, 8)
    assert res.star.shape == (3, 11) and len(res.triangles) == 3  # every pair of 3 outputs
    assert res.triangle_pairs == [[0, 1], [0, 2], [1, 2]]
    assert res.star[:, 0] == pytest.approx([float(res.lst.p0[0])] * 3, abs=1e-5)  # the line starts at the source
    assert np.allclose(res.star[:, -1], res.lst.confidence[-1], atol=1e-5)  # and ends at each output
    assert all(len(t.weights) == 66 for t in res.triangles)
    out = torch.from_numpy(res.lst.output)  # pair (0, 2) is that triangle
    direct = triangle(lm.model, test.x([src])[0], out[0], out[2], res.label)
    assert np.allclose(res.triangles[1].confidence, direct.confidence, atol=1e-6)
    consecutive = wait_for_job(
        runner.submit(
            job(
                "level_set_traversal",
                TraversalConfig(
                    model=r, source=src, targets=targets, lst=LSTConfig(steps=30, delta=0.2), pairs="consecutive"
                ),
                (r,),
            )
        )
    )
    assert consecutive.triangle_pairs == [[0, 1], [1, 2]] and len(consecutive.triangles) == 2

    same = int(ok[test.labels[ok] == test.labels[src]][1])
    bad = runner.submit(job("level_set_traversal", TraversalConfig(model=r, source=src, targets=(same,)), (r,)))
    runner.wait(bad, 60)
    assert "of the source's class" in runner.error(bad)
    mnist = runner.submit(
        job(
            "level_set_traversal",
            TraversalConfig(model=r, source=src, targets=targets, data=DataSpec(name="mnist").key()),
            (r,),
        )
    )
    runner.wait(mnist, 60)
    assert "trained on Digits" in runner.error(mnist) and "same data set" in runner.error(mnist)
    with pytest.raises(InvalidInputError, match="other than the source"):
        TraversalConfig(model=r, source=src, targets=(src,))
