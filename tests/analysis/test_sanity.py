import torch

from analysis.saliency import SaliencyConfig
from analysis.sanity import cascading_randomization, parameter_layers, spearman
from models.data import DataSpec
from models.training import TrainConfig, train_run
from models.zoo import load_model


def test_spearman_known_values():
    a = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    assert abs(float(spearman(a, a)) - 1) < 1e-9 and abs(float(spearman(a, -a)) + 1) < 1e-9
    assert abs(float(spearman(a, torch.tensor([[10.0, 20.0, 30.0, 40.0]]))) - 1.0) < 1e-9


def test_gradient_maps_change_under_randomization_but_a_model_blind_map_is_flagged(tmp_path):
    cfg = TrainConfig(data=DataSpec(name="digits"), arch="cnn", epochs=5, batch_size=64, lr=0.05)
    rec = train_run(cfg, tmp_path / "r")
    lm = load_model("r", root=tmp_path)
    x = torch.rand(6, 1, 8, 8)
    target = torch.zeros(6, dtype=torch.long)
    grad = cascading_randomization(lm.model, x, target, SaliencyConfig(method="gradient"))
    assert grad.layers == list(reversed(parameter_layers(lm.model))) == ["fc2", "fc1", "conv2", "conv1"]
    assert grad.maps.shape == (5, 6, 8, 8) and grad.rank_corr.shape == (4, 6)
    assert not grad.flagged and grad.rank_corr[-1].mean() < 0.5
    blind = cascading_randomization(lm.model, x, target, SaliencyConfig(method="random"))
    assert blind.flagged and abs(blind.rank_corr.mean() - 1) < 1e-9
    assert rec["status"] == "complete"
    # the model passed in is untouched
    assert torch.equal(lm.model.fc2.weight, load_model("r", root=tmp_path).model.fc2.weight)
