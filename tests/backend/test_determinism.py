"""Seeded jobs give the same results run alone, run side by side, and while another thread keeps
re-seeding and drawing from PyTorch's global RNG (as a concurrent job using it would)."""

import threading
from contextlib import contextmanager

import pytest
import torch
from torch import nn

from lenscape.analysis.saliency import SaliencyConfig
from lenscape.analysis.sanity import model_randomization
from lenscape.backend.jobs import JobStatus
from lenscape.backend.runner import LocalRunner
from lenscape.backend.store import ResultStore
from lenscape.backend.tasks import train_jobs
from lenscape.models.architectures import ArchSpec, build_model
from lenscape.models.checkpoints import model_fingerprint
from lenscape.models.seeding import generator, init_parameters
from lenscape.models.training import preset


@contextmanager
def global_rng_hammered():
    """Another thread re-seeding and drawing from the global RNG the whole time."""
    stop = threading.Event()

    def hammer():
        i = 0
        while not stop.is_set():
            torch.manual_seed(i)
            torch.rand(64)
            i += 1

    t = threading.Thread(target=hammer, daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join()


SPECS = [
    ArchSpec(name="mlp", in_shape=(1, 8, 8), num_classes=10, mean=(0.5,), std=(0.2,), widths=(32, 16)),
    ArchSpec(name="cnn", in_shape=(3, 16, 16), num_classes=4, mean=(0.5,) * 3, std=(0.2,) * 3, batchnorm=True),
]


@pytest.mark.parametrize("spec", SPECS, ids=["mlp", "cnn+bn"])
def test_seeded_init_is_pytorchs_default_init_without_the_global_rng(spec):
    torch.manual_seed(7)
    reference = build_model(spec)  # PyTorch's own reset_parameters from a seeded global RNG
    with global_rng_hammered():
        ours = [build_model(spec, seed=7) for _ in range(3)]
    for model in ours:
        for (name, a), (_, b) in zip(reference.state_dict().items(), model.state_dict().items()):
            assert torch.equal(a, b), name
    assert model_fingerprint(build_model(spec, seed=8)) != model_fingerprint(ours[0])


def test_init_parameters_reaches_layers_it_has_no_formula_for():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.zeros(5))
            self.emb = nn.Embedding(4, 3)

    a, b = Odd(), Odd()
    with global_rng_hammered():
        init_parameters(a, generator(1))
        init_parameters(b, generator(1))
    assert torch.equal(a.scale, b.scale) and torch.equal(a.emb.weight, b.emb.weight)
    assert a.scale.abs().sum() > 0  # re-drawn, not left at zero
    c = Odd()
    init_parameters(c, generator(2))
    assert not torch.equal(a.emb.weight, c.emb.weight)


def _train(home, seeds, workers, hammer=False):
    runner = LocalRunner(ResultStore(home / "store"), workers=1, long_workers=workers)
    cfg = preset("digits-mlp", epochs=2)
    with global_rng_hammered() if hammer else _nothing():
        ids = [runner.submit(j) for j in train_jobs(cfg, seeds)]
        assert all(runner.wait(i, 120) == JobStatus.DONE for i in ids)
    out = {runner.result(i)["seed"]: [c["fingerprint"] for c in runner.result(i)["checkpoints"]] for i in ids}
    runner.shutdown()
    return out


@contextmanager
def _nothing():
    yield


def test_two_seeded_trainings_side_by_side_equal_each_run_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("LENSCAPE_HOME", str(tmp_path / "alone"))
    alone = {**_train(tmp_path / "alone", [0], 1), **_train(tmp_path / "alone", [1], 1)}
    monkeypatch.setenv("LENSCAPE_HOME", str(tmp_path / "together"))
    together = _train(tmp_path / "together", [0, 1], 2, hammer=True)
    assert together == alone
    assert alone[0] != alone[1]


def test_randomization_check_is_the_same_while_the_global_rng_is_in_use():
    spec = SPECS[0]
    model = build_model(spec, seed=0).eval()
    x = torch.rand(3, 1, 8, 8, generator=generator(0))
    target = torch.tensor([1, 2, 3])
    cfg = SaliencyConfig(method="gradient")
    first = model_randomization(model, x, target, cfg, seed=5)
    with global_rng_hammered():
        second = model_randomization(model, x, target, cfg, seed=5)
    assert (first.maps == second.maps).all() and (first.between_random == second.between_random).all()


def test_training_neither_reads_nor_moves_the_global_rng(tmp_path):
    """Deterministic counterpart of the side-by-side test: a job that leaves the global generator as
    it found it, and whose result does not depend on it, cannot disturb or be disturbed by another."""
    from lenscape.models.training import fit_and_score, prepare_data, train_run

    cfg = preset("digits-mlp", epochs=2)
    fingerprints = []
    for i, global_seed in enumerate((123, 456)):
        torch.manual_seed(global_seed)
        before = torch.get_rng_state()
        rec = train_run(cfg, tmp_path / f"run{i}")
        assert torch.equal(torch.get_rng_state(), before)
        fingerprints.append([c["fingerprint"] for c in rec["checkpoints"]])
    assert fingerprints[0] == fingerprints[1]
    data = prepare_data(cfg)
    scores = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        before = torch.get_rng_state()
        scores.append(fit_and_score(cfg, data.train, data.test))
        assert torch.equal(torch.get_rng_state(), before)
    assert scores[0] == scores[1]


def test_the_randomization_check_and_random_twins_leave_the_global_rng_alone():
    spec = SPECS[1]
    model = build_model(spec, seed=0).eval()
    x = torch.rand(2, 3, 16, 16, generator=generator(0))
    torch.manual_seed(5)
    before = torch.get_rng_state()
    model_randomization(model, x, torch.tensor([0, 1]), SaliencyConfig(method="gradient"), seed=1)
    build_model(spec, seed=3)
    build_model(spec)
    assert torch.equal(torch.get_rng_state(), before)
