"""Similarity jobs on three digits MLP seeds (seconds), run by the real backend."""

import numpy as np

from lenscape.backend.jobs import job, ref
from lenscape.backend.similarity_tasks import ActSpec, SeedMatrixConfig
from lenscape.models.data import DataSpec
from lenscape.models.training import TrainConfig
from lenscape.models.zoo import load_model

RECIPE = TrainConfig(data=DataSpec(name="digits"), arch="mlp", widths=(32,), epochs=2, batch_size=64, lr=0.1)


def test_seed_matrix_baseline_is_symmetric_so_a_cell_and_its_mirror_agree(runner, trained_run, wait_for_job):
    refs = tuple(ref(load_model(r["run_id"])) for r in trained_run(RECIPE, seeds=(0, 1, 2)))
    cfg = SeedMatrixConfig(models=refs, layer="relu1", metric="cca", acts=ActSpec(n_examples=300))
    m = wait_for_job(runner.submit(job("seed_similarity", cfg, refs)))
    assert np.allclose(m.values, m.values.T, atol=1e-8)
    assert np.array_equal(m.baseline, m.baseline.T)
    beaten = m.values > m.baseline
    assert np.array_equal(beaten, beaten.T)
    # each model's own random-network value is distinct, so the old per-row baseline was not symmetric
    assert len(set(np.round(np.diag(m.baseline), 12))) == 3
