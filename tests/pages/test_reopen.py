"""Reopening a stored result from the Runs page (issue 23, 1): for every job kind, the view opens
on the stored result with every widget that produced it set as it was, and submits no new job.

Each job is computed here with settings other than the page's defaults, then the page is opened
with the Runs page's own link (ui.runs.reopen_link)."""

from __future__ import annotations

import pytest

from apphelpers import assert_reopened
from lenscape.backend.jobs import job, ref
from lenscape.models.zoo import load_model


@pytest.fixture
def noisy(trained_run):
    (rec,) = trained_run("digits-mlp", label_noise=0.1, epochs=6)
    return load_model(rec["run_id"])


def test_every_memorization_kind_reopens_on_its_result(runner, wait_for_job, noisy, trained_run):
    from lenscape.analysis.memorization import FlipConfig, RetrainConfig
    from lenscape.backend.memorization_tasks import (
        FlipJobConfig,
        GradientsConfig,
        RetrainJobConfig,
        SweepConfig,
        TiedDropoutConfig,
    )

    r = ref(noisy)
    cases = [
        (
            "memorization_overview",
            SweepConfig(model=r, stride=2),
            "mem.ov",
            {"mem.ov.stride": 2},
            "Relabelled examples (.csv)",
        ),
        (
            "memorization_gradients",
            GradientsConfig(model=r, source="checkpoints", grouping="module", stride=3),
            "mem.gr",
            {"mem.gr.source": "checkpoints", "mem.gr.grouping": "module", "mem.gr.stride": 3},
            "Gradient accounting (.csv)",
        ),
        (
            "memorization_rewinding",
            SweepConfig(model=r, stride=3, grouping="module"),
            "mem.rw",
            {"mem.rw.stride": 3, "mem.rw.grouping": "module"},
            "Layer rewinding (.csv)",
        ),
        (
            "memorization_retraining",
            RetrainJobConfig(model=r, groups=("out",), grouping="module", retrain=RetrainConfig(max_epochs=2, lr=0.02)),
            "mem.rt",
            {"mem.rt.grouping": "module", "mem.rt.groups.module": ["out"], "mem.rt.epochs": 2, "mem.rt.lr": 0.02},
            "Retraining (.csv)",
        ),
        (
            "memorization_flipping",
            FlipJobConfig(
                model=r,
                n_memorized=3,
                n_clean=2,
                seed=1,
                probe=200,
                flip=FlipConfig(batch_size=64, max_steps=7, max_acc_drop=0.3, seed=1),
            ),
            "mem.fl",
            {
                "mem.fl.nmem": 3,
                "mem.fl.nclean": 2,
                "mem.fl.batch": 64,
                "mem.fl.cap": 7,
                "mem.fl.drop": 0.3,
                "mem.fl.seed": 1,
            },
            "Neuron flipping (.csv)",
        ),
    ]
    (tied,) = trained_run("digits-mlp-tied-dropout", epochs=2)
    rt = ref(load_model(tied["run_id"]))
    cases.append(("memorization_tied_dropout", TiedDropoutConfig(model=rt), "mem.td", {}, "Tied dropout (.csv)"))
    for kind, cfg, key, widgets, shown in cases:
        model = cfg.model
        job_id = runner.submit(job(kind, cfg, (model,), f"{kind} for the reopen test"))
        wait_for_job(job_id)
        assert_reopened(runner, job_id, f"{key}.job", widgets, shown)
