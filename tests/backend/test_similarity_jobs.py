"""Similarity jobs on three digits MLP seeds (seconds), run by the real backend."""

import numpy as np

from backend.jobs import Job, JobStatus
from backend.runner import open_backend
from backend.saliency_tasks import ref
from backend.similarity_tasks import ActSpec, SeedMatrixConfig
from backend.tasks import train_jobs
from models.data import DataSpec
from models.training import TrainConfig
from models.zoo import load_model

RECIPE = TrainConfig(data=DataSpec(name="digits"), arch="mlp", widths=(32,), epochs=2, batch_size=64, lr=0.1)


def test_seed_matrix_baseline_is_symmetric_so_a_cell_and_its_mirror_agree():
    runner = open_backend()
    ids = [runner.submit(j) for j in train_jobs(RECIPE, [0, 1, 2])]
    assert all(runner.wait(i, 300) == JobStatus.DONE for i in ids)
    refs = tuple(ref(load_model(runner.result(i)["run_id"])) for i in ids)
    cfg = SeedMatrixConfig(models=refs, layer="relu1", metric="cca", acts=ActSpec(n_examples=300))
    job_id = runner.submit(Job("seed_similarity", cfg, fingerprints=tuple(r.fingerprint for r in refs)))
    assert runner.wait(job_id, 300) == JobStatus.DONE, runner.error(job_id)
    m = runner.result(job_id)
    assert np.allclose(m.values, m.values.T, atol=1e-8)
    assert np.array_equal(m.baseline, m.baseline.T)
    beaten = m.values > m.baseline
    assert np.array_equal(beaten, beaten.T)
    # each model's own random-network value is distinct, so the old per-row baseline was not symmetric
    assert len(set(np.round(np.diag(m.baseline), 12))) == 3
    runner.shutdown()
