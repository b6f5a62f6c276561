"""The paper's finding at small scale (Shah et al. 2021, BlockMNIST), on CPU in about a minute."""

import warnings

import numpy as np
import pytest

from lenscape.analysis.roar import DiffRoarConfig
from lenscape.analysis.saliency import SaliencyConfig, attribute, null_mass_at_k
from lenscape.backend.jobs import job, ref
from lenscape.backend.saliency_tasks import DiffRoarJobConfig
from tests.conftest import has_data
from lenscape.models.attacks import PGDConfig
from lenscape.models.data import DataSpec, load_data, null_block_mask
from lenscape.models.paths import runs_dir
from lenscape.models.training import TrainConfig, run_id_for, train_run
from lenscape.models.zoo import load_model

pytestmark = [pytest.mark.paper, pytest.mark.skipif(not has_data("mnist"), reason="needs MNIST in LENSCAPE_DATA")]
BLOCK = DataSpec(name="blockmnist")
STANDARD = TrainConfig(data=BLOCK, arch="mlp", widths=(256, 256), epochs=3, lr=0.05)
ROBUST = TrainConfig(
    data=BLOCK, arch="mlp", widths=(256, 256), epochs=3, lr=0.05, adversarial=PGDConfig(norm="l2", eps=3.0, steps=7)
)


def _null_mass(cfg: TrainConfig, k: float = 0.05) -> float:
    rec = train_run(cfg, runs_dir() / run_id_for(cfg))
    assert rec["metrics"][-1]["test_acc"] > 0.98
    model = load_model(rec["run_id"]).model
    test = load_data(BLOCK, "test")
    x, y = test.x(slice(0, 1000)), test.labels[:1000]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        attr = attribute(model, x, y, SaliencyConfig(method="gradient"))
    return float(null_mass_at_k(attr, null_block_mask(test.signal_top[:1000]), k).mean())


def test_robust_mlp_puts_clearly_less_topk_mass_in_the_null_block():
    standard, robust = _null_mass(STANDARD), _null_mass(ROBUST)
    print(f"\nNullMass@5% standard MLP {standard:.3f}  robust MLP {robust:.3f}")
    assert standard > 0.1  # feature leakage: the standard model's gradient lights up the null block
    assert robust < standard / 3  # the robust model's gradient stays on the signal


def test_diffroar_of_random_attribution_is_near_zero(runner, trained_run, wait_for_job):
    model = ref(load_model(trained_run(STANDARD)[0]["run_id"]))
    roar = DiffRoarConfig(methods=("gradient",), k_grid=(0.05, 0.2), seeds=(0, 1), epochs=1, train_subset=4000)
    res = wait_for_job(runner.submit(job("diffroar", DiffRoarJobConfig(model=model, roar=roar), (model,), "diffroar")))
    print("\nDiffROAR", dict(zip(res.methods, res.diff_mean.round(3).tolist())))
    random = res.methods.index("random")
    assert np.all(np.abs(res.diff_mean[random]) <= 0.05)
    assert res.acc_top.shape == (2, 2, 2)
