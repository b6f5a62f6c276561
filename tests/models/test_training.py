import json

import pytest
import torch
import torch.nn.functional as F

from lenscape.models.architectures import ArchSpec, ExampleTiedDropout, build_model
from lenscape.models.attacks import PGDConfig, pgd_perturbation
from lenscape.models.checkpoints import load_checkpoint, model_fingerprint, read_json
from lenscape.models.data import DataSpec
from lenscape.errors import InvalidInputError
from lenscape.models.training import TrainConfig, lr_factor, preset, train_run
from lenscape.models.zoo import list_runs, load_model

TINY = TrainConfig(data=DataSpec(name="digits"), arch="mlp", widths=(64,), epochs=8, batch_size=64, lr=0.1)


def test_tiny_mlp_on_digits_learns(tmp_path):
    rec = train_run(TINY, tmp_path / "run")
    assert rec["metrics"][-1]["test_acc"] >= 0.93, rec["metrics"][-1]
    assert all(m["seconds"] > 0 for m in rec["metrics"])  # timings are recorded (bench/ compares them)


def test_same_seed_same_weights_other_seed_differs(tmp_path):
    a = train_run(TINY, tmp_path / "a")
    b = train_run(TINY, tmp_path / "b")
    c = train_run(TrainConfig(**{**TINY.__dict__, "seed": 1}), tmp_path / "c")
    fp = lambda r: r["checkpoints"][-1]["fingerprint"]  # noqa: E731
    assert fp(a) == fp(b) and fp(a) != fp(c)
    sa, _ = load_checkpoint(tmp_path / "a" / "epoch_008.safetensors")
    sb, _ = load_checkpoint(tmp_path / "b" / "epoch_008.safetensors")
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_checkpoint_per_epoch_and_complete_sidecar(tmp_path, monkeypatch):
    monkeypatch.setenv("LENSCAPE_HOME", str(tmp_path))
    cfg = TrainConfig(**{**TINY.__dict__, "epochs": 3, "label_noise": 0.1})
    rec = train_run(cfg, tmp_path / "runs" / "r1")
    side = read_json(tmp_path / "runs" / "r1" / "run.json")
    assert side == json.loads(json.dumps(rec))
    assert [c["epoch"] for c in side["checkpoints"]] == [0, 1, 2, 3]
    for key in ("arch", "data", "normalization", "seed", "config", "metrics", "noise", "classes"):
        assert side[key] is not None, key
    assert side["normalization"]["mean"] == list(side["arch"]["mean"])
    assert TrainConfig.from_dict(side["config"]) == cfg
    assert len(side["metrics"]) == 3 and {"train_loss", "test_acc"} <= set(side["metrics"][0])
    noise = side["noise"]
    assert len(noise["indices"]) == int(0.1 * side["n_train"])
    assert all(o != n for o, n in zip(noise["original_labels"], noise["noisy_labels"]))
    # the registry lists it after a "restart" and reloads the exact weights
    assert [r["run_id"] for r in list_runs()] == ["r1"]
    lm = load_model("r1", epoch=2)
    assert model_fingerprint(lm.model) == side["checkpoints"][2]["fingerprint"]


@pytest.mark.parametrize("norm,eps", [("l2", 1.0), ("linf", 0.1)])
def test_pgd_stays_in_ball_and_raises_loss(norm, eps):
    torch.manual_seed(0)
    spec = ArchSpec(name="mlp", in_shape=(1, 8, 8), num_classes=10, mean=(0.3,), std=(0.3,), widths=(32,))
    model = build_model(spec).eval()
    x, y = torch.rand(16, 1, 8, 8), torch.randint(0, 10, (16,))
    delta = pgd_perturbation(model, x, y, PGDConfig(norm=norm, eps=eps, steps=10))
    size = delta.flatten(1).norm(dim=1) if norm == "l2" else delta.flatten(1).abs().amax(dim=1)
    assert float(size.max()) <= eps + 1e-5
    assert float((x + delta).min()) >= 0 and float((x + delta).max()) <= 1
    assert F.cross_entropy(model(x + delta), y) > F.cross_entropy(model(x), y) + 0.1


def test_adversarial_training_runs_and_records_config(tmp_path):
    cfg = TrainConfig(**{**TINY.__dict__, "epochs": 2, "adversarial": PGDConfig(norm="linf", eps=0.1, steps=3)})
    rec = train_run(cfg, tmp_path / "adv")
    assert rec["config"]["adversarial"]["norm"] == "linf"
    assert rec["metrics"][-1]["test_acc"] > 0.5


def test_example_tied_dropout_masks_follow_the_example():
    drop = ExampleTiedDropout(10, p_gen=0.4, p_mem=0.5)
    x = torch.ones(3, 10, 2, 2)
    drop.train()
    with pytest.raises(InvalidInputError):
        drop(x)
    drop.ids = torch.tensor([7, 8, 7])
    out = drop(x)
    assert torch.equal(out[0], out[2])  # same example, same mask
    assert torch.all(out[:, :4] == 1)  # generalization channels always on
    assert set(out[:, 4:].unique().tolist()) <= {0.0, 1.0}  # no rescaling in training
    drop.eval()
    assert torch.allclose(drop(x)[:, 4:], torch.full((3, 6, 2, 2), 0.5))
    drop.mode = "drop"
    assert torch.allclose(drop(x)[:, :4], torch.full((3, 4, 2, 2), 0.9 / 0.4)) and drop(x)[:, 4:].abs().sum() == 0


def test_training_with_tied_dropout(tmp_path):
    cfg = TrainConfig(**{**TINY.__dict__, "epochs": 3, "p_gen": 0.5, "p_mem": 0.3})
    rec = train_run(cfg, tmp_path / "tied")
    assert rec["arch"]["p_gen"] == 0.5 and rec["metrics"][-1]["test_acc"] > 0.6


def test_cancel_via_progress_leaves_nothing(tmp_path):
    def stop(fraction, message):
        if fraction > 0.3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_run(TINY, tmp_path / "stopped", progress=stop)
    assert not (tmp_path / "stopped").exists()


def test_schedules():
    cfg = TrainConfig(schedule="triangle")
    assert lr_factor(0, 100, cfg) == 0 and lr_factor(50, 100, cfg) == 1 and lr_factor(75, 100, cfg) == 0.5
    cos = TrainConfig(schedule="cosine", warmup=0.1)
    assert lr_factor(4, 100, cos) == pytest.approx(0.5) and lr_factor(100, 100, cos) == pytest.approx(0)
    assert preset("mnist-cnn", epochs=1).epochs == 1
    with pytest.raises(InvalidInputError):
        preset("nope")
