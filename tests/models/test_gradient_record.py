"""The paper's gradient accounting recorded while training (ALGORITHMS.md section 3, "Gradient
accounting"): the record in run.json against a re-derivation written here, a training loop of its
own that splits each batch into clean and noisy examples and sums their gradients over the epoch."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lenscape.analysis.memorization import layer_groups
from lenscape.models.architectures import build_model, example_ids
from lenscape.models.checkpoints import read_json
from lenscape.models.data import DataSpec
from lenscape.models.training import TrainConfig, lr_factor, prepare_data, train_run

NOISY = TrainConfig(
    data=DataSpec(name="digits"),
    arch="mlp",
    widths=(32,),
    epochs=3,
    batch_size=128,
    lr=0.1,
    label_noise=0.2,
    train_subset=600,
)


def _rederived(cfg: TrainConfig):
    """Per epoch and parameter: (‖G_clean‖, ‖G_noisy‖, cos) summed over the epoch's batches, the
    weights stepping with the batch's plain mean-loss gradient (one backward), as train.py does."""
    data = prepare_data(cfg)
    model = build_model(cfg.arch_spec(data.train), seed=cfg.seed)
    params = dict(model.named_parameters())
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    n = len(data.train)
    total = cfg.epochs * math.ceil(n / cfg.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, total, cfg))
    gen = torch.Generator().manual_seed(cfg.seed)
    out = []
    for _ in range(cfg.epochs):
        model.train()
        sums = {
            k: [torch.zeros_like(p, dtype=torch.float64), torch.zeros_like(p, dtype=torch.float64)]
            for k, p in params.items()
        }
        perm = torch.randperm(n, generator=gen)
        for s in range(0, n, cfg.batch_size):
            idx = perm[s : s + cfg.batch_size]
            x = data.train.images[idx].float() / 255
            y, noisy = data.train.labels[idx], data.noise_mask[idx]
            with example_ids(model, idx):
                out_b = model(x)
            # each part on its own: (|C|/|B|) mean_C ℓ, written with masks rather than indexing
            for j, keep in enumerate((~noisy, noisy)):
                part = (F.cross_entropy(out_b, y, reduction="none") * keep).sum() / len(y)
                for k, g in zip(params, torch.autograd.grad(part, list(params.values()), retain_graph=True)):
                    sums[k][j] += g
            opt.zero_grad()
            F.cross_entropy(out_b, y).backward()
            opt.step()
            sched.step()
        out.append(
            {
                k: (float(c.norm()), float(m.norm()), float(c.flatten() @ m.flatten() / (c.norm() * m.norm())))
                for k, (c, m) in sums.items()
            }
        )
    return out, model


def test_the_record_in_run_json_equals_a_training_loop_written_here(tmp_path):
    rec = train_run(NOISY, tmp_path / "run")
    stored = read_json(tmp_path / "run" / "run.json")["gradients"]
    assert stored == rec["gradients"]
    ref, _ = _rederived(NOISY)
    assert stored["epochs"] == [1, 2, 3]
    assert stored["names"] == ["fc1.weight", "fc1.bias", "out.weight", "out.bias"]
    assert stored["numel"] == [64 * 32, 32, 32 * 10, 10]
    for e in range(3):
        for i, name in enumerate(stored["names"]):
            c, m, cos = ref[e][name]
            assert stored["clean_norm"][e][i] == pytest.approx(c, rel=1e-4), (e, name)
            assert stored["noisy_norm"][e][i] == pytest.approx(m, rel=1e-4), (e, name)
            assert stored["cosine"][e][i] == pytest.approx(cos, abs=1e-4), (e, name)
    # the sums differ from epoch to epoch (the weights moved), and clean and noisy pull apart somewhere
    assert stored["clean_norm"][0] != stored["clean_norm"][2]
    assert min(min(row) for row in stored["cosine"]) < 0.5


def test_recording_leaves_training_as_it_was(tmp_path):
    """The step uses g_clean + g_noisy: the same gradient as one backward of the mean loss up to
    rounding, so the weights end where the plain loop's end."""
    train_run(NOISY, tmp_path / "run")
    from lenscape.models.checkpoints import load_checkpoint

    state, _ = load_checkpoint(tmp_path / "run" / "epoch_003.safetensors")
    _, model = _rederived(NOISY)
    for k, v in model.state_dict().items():
        assert torch.allclose(state[k], v, atol=1e-5), k


def test_no_record_without_label_noise(tmp_path):
    rec = train_run(TrainConfig(**{**NOISY.__dict__, "label_noise": 0.0, "epochs": 1}), tmp_path / "clean")
    assert "gradients" not in rec


def test_grouped_figures_from_the_record_follow_the_papers_formula(tmp_path):
    """Σ_p ‖G_p‖/√numel(p) and the mean cosine over a group's parameters, as experiments/gradients.py."""
    from lenscape.backend.memorization_tasks import recorded_gradients

    rec = train_run(NOISY, tmp_path / "run")
    data = prepare_data(NOISY)
    model = build_model(NOISY.arch_spec(data.train), seed=0)
    res = recorded_gradients(rec, model, "paper")
    g = rec["gradients"]
    assert res.groups == ["fc1", "out"] and res.epochs == [1, 2, 3]
    for e in range(3):
        for gi, (lo, hi) in enumerate([(0, 2), (2, 4)]):
            want = sum(g["clean_norm"][e][i] / math.sqrt(g["numel"][i]) for i in range(lo, hi))
            assert res.clean_norm[e, gi] == pytest.approx(want)
            want = sum(g["noisy_norm"][e][i] / math.sqrt(g["numel"][i]) for i in range(lo, hi))
            assert res.noisy_norm[e, gi] == pytest.approx(want)
            assert res.cosine[e, gi] == pytest.approx(np.mean(g["cosine"][e][lo:hi]))
    assert list(layer_groups(model)) == res.groups
