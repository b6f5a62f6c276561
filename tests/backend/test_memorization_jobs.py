"""The memorization jobs on a digits MLP trained by the backend with 10% flipped labels."""

import numpy as np
import pytest
import torch

from lenscape.analysis.memorization import FlipConfig, RetrainConfig
from lenscape.backend.jobs import job, ref
from lenscape.backend.memorization_tasks import (
    FlipJobConfig,
    GradientsConfig,
    RetrainJobConfig,
    SweepConfig,
    TiedDropoutConfig,
)
from lenscape.errors import InvalidInputError
from lenscape.models.training import TrainConfig, prepare_data
from lenscape.models.zoo import load_model


def test_every_memorization_job_on_a_noisy_run(runner, trained_run, wait_for_job):
    (rec,) = trained_run("digits-mlp", label_noise=0.1, epochs=12)
    lm = load_model(rec["run_id"])
    r = ref(lm)
    data = prepare_data(TrainConfig.from_dict(rec["config"]))
    mask = data.noise_mask

    ov = wait_for_job(runner.submit(job("memorization_overview", SweepConfig(model=r, stride=4), (r,))))
    assert ov.epochs == [0, 4, 8, 12] and ov.noise_fraction == pytest.approx(float(mask.float().mean()))
    assert np.array_equal(ov.noisy_indices, torch.nonzero(mask).flatten().numpy())
    assert ov.noisy_acc[-1] == pytest.approx(float(ov.memorized.mean()))  # memorized = noisy label predicted
    assert np.array_equal(ov.noisy_labels, data.train.labels[mask].numpy())
    assert (ov.true_labels != ov.noisy_labels).all()
    assert ov.test_acc[-1] == pytest.approx(rec["metrics"][-1]["test_acc"], abs=1e-6)

    # the paper's accounting, recorded while each epoch trained (the default), and the checkpoint version
    gt = wait_for_job(runner.submit(job("memorization_gradients", GradientsConfig(model=r, source="training"), (r,))))
    assert gt.epochs == list(range(1, 13)) and gt.groups == ["fc1", "out"] and gt.clean_norm.shape == (12, 2)
    g = rec["gradients"]
    assert gt.cosine[4, 1] == pytest.approx(np.mean(g["cosine"][4][2:4]))
    gr = wait_for_job(
        runner.submit(job("memorization_gradients", GradientsConfig(model=r, source="checkpoints", stride=6), (r,)))
    )
    assert gr.epochs == [0, 6, 12] and gr.groups == ["fc1", "out"] and gr.clean_norm.shape == (3, 2)
    assert (gr.clean_norm > 0).all() and (gr.noisy_norm > 0).all() and (np.abs(gr.cosine) <= 1).all()
    with pytest.raises(InvalidInputError, match="source"):
        GradientsConfig(model=r, source="train")
    with pytest.raises(InvalidInputError, match="grouping"):
        SweepConfig(model=r, grouping="blocks")

    rw = wait_for_job(runner.submit(job("memorization_rewinding", SweepConfig(model=r, stride=6), (r,))))
    assert rw.clean_acc.shape == (2, 3)
    final = np.array([rw.final["clean"], rw.final["noisy"], rw.final["test"]])
    for acc, f in zip((rw.clean_acc, rw.noisy_acc, rw.test_acc), final):
        assert np.allclose(acc[:, -1], f)  # the last checkpoint: no change
    assert (rw.clean_acc[:, 0] < rw.final["clean"]).all()  # epoch 0 weights: worse

    rt = wait_for_job(
        runner.submit(
            job(
                "memorization_retraining",
                RetrainJobConfig(model=r, groups=("out",), retrain=RetrainConfig(max_epochs=3)),
                (r,),
            )
        )
    )
    assert rt.groups == ["out"] and len(rt.noisy_acc[0]) <= 3 and rt.final_noisy == pytest.approx(rw.final["noisy"])

    fl = wait_for_job(
        runner.submit(
            job(
                "memorization_flipping",
                FlipJobConfig(
                    model=r, n_memorized=3, n_clean=3, flip=FlipConfig(batch_size=64, max_steps=10), probe=200
                ),
                (r,),
            )
        )
    )
    assert len(fl.examples) == len(fl.kind) == len(fl.clean_acc) and fl.layers == ["fc1"]
    assert set(fl.kind) <= {"memorized", "clean"} and "clean" in fl.kind
    for i, t in enumerate(fl.examples):
        assert bool(mask[t]) == (fl.kind[i] == "memorized")
        assert len(fl.neurons[i]) == fl.n_neurons[i] <= 10
    assert (fl.clean_acc <= 1).all() and 0 < fl.base_test_acc <= 1

    bad = runner.submit(job("memorization_tied_dropout", TiedDropoutConfig(model=r), (r,)))
    runner.wait(bad, 60)
    assert "no example-tied dropout" in runner.error(bad)
    with pytest.raises(InvalidInputError, match="each layer once"):
        RetrainJobConfig(model=r, groups=("out", "out"))


def test_a_run_trained_before_the_record_existed_says_so(runner, trained_run):
    from lenscape.models.checkpoints import read_json, write_json
    from lenscape.models.zoo import run_folder

    (rec,) = trained_run("digits-mlp", label_noise=0.1, epochs=2)
    path = run_folder(rec["run_id"]) / "run.json"
    old = read_json(path)
    del old["gradients"]
    write_json(path, old)
    r = ref(load_model(rec["run_id"]))
    jid = runner.submit(job("memorization_gradients", GradientsConfig(model=r, source="training"), (r,)))
    runner.wait(jid, 60)
    assert "no gradients recorded during training" in runner.error(jid) and "checkpoint version" in runner.error(jid)


def test_a_model_without_label_noise_has_nothing_memorized(runner, trained_run):
    (rec,) = trained_run("digits-mlp", epochs=2)
    r = ref(load_model(rec["run_id"]))
    jid = runner.submit(job("memorization_overview", SweepConfig(model=r), (r,)))
    runner.wait(jid, 60)
    assert "trained without label noise" in runner.error(jid) and "nothing memorized" in runner.error(jid)
