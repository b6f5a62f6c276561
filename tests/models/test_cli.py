import subprocess
import sys
from pathlib import Path

import pytest

from lenscape.models.zoo import list_runs

ROOT = Path(__file__).resolve().parents[2]


def _lenscape(*args: str, timeout: int) -> subprocess.CompletedProcess:
    """`python -m lenscape ARGS` from the repository, its output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "lenscape", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def test_cli_trains_seeds_into_the_workspace(lenscape_home):
    out = _lenscape("train", "--preset", "digits-mlp", "--seeds", "0-1", "--epochs", "2", timeout=300)
    assert out.returncode == 0, out.stderr
    runs = list_runs()
    assert sorted(r["seed"] for r in runs) == [0, 1]
    assert all(len(r["checkpoints"]) == 3 for r in runs)
    assert "test acc" in out.stdout


def test_cli_rejects_unknown_preset():
    out = _lenscape("train", "--preset", "nope", timeout=120)
    assert out.returncode != 0 and "invalid choice" in out.stderr


def test_lenscape_app_adds_your_own_model_then_serves(lenscape_home, tmp_path):
    """`lenscape app --model mod:fn --kwargs JSON --weights w.safetensors --data folder` adds the model
    (the folder and the code trusted for this workspace), then starts the app on it."""
    import json
    import os
    import time
    import urllib.request

    import numpy as np
    import torch
    from PIL import Image
    from safetensors.torch import save_file

    from tests import custom_nets
    from tests.browser import free_port

    digits = custom_nets.DigitsDataset()
    for i in range(60):
        folder = tmp_path / "images" / f"d{int(digits.y[i])}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((digits.x[i, 0].numpy() * 255).astype(np.uint8)).save(folder / f"{i}.png")
    torch.manual_seed(0)
    net = custom_nets.residual_cnn(width=4, blocks=1, num_classes=len(list((tmp_path / "images").iterdir())))
    save_file(net.state_dict(), tmp_path / "w.safetensors")
    port = free_port()
    kwargs = {"width": 4, "blocks": 1, "num_classes": net.head.out_features}
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LENSCAPE_ALLOWED_ROOTS": ""}
    proc = subprocess.Popen(
        [sys.executable, "-m", "lenscape", "app", "--model", "tests.custom_nets:residual_cnn", "--kwargs",
         json.dumps(kwargs), "--weights", str(tmp_path / "w.safetensors"), "--data", str(tmp_path / "images"),
         "--name", "from the shell", "--server.port", str(port), "--server.headless", "true"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline, up = time.time() + 120, False
        while time.time() < deadline and not up:
            try:
                up = urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).status == 200
            except OSError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                time.sleep(0.5)
        assert up
        (rec,) = list_runs()
        assert rec["name"] == "from the shell" and rec["arch"]["builder"] == "tests.custom_nets:residual_cnn"
        assert rec["data"]["folder"] == str((tmp_path / "images").resolve())
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_lenscape_app_says_what_is_missing_to_add_a_model(lenscape_home):
    out = _lenscape("app", "--model", "tests.custom_nets:residual_cnn", timeout=120)
    assert out.returncode == 2 and "--weights, --data" in out.stderr


def test_lenscape_train_runs_a_presets_recipe_on_your_own_network(lenscape_home):
    """`lenscape train --preset digits-mlp-noise10 --model mod:fn`: the preset's data, label noise and schedule
    on the user's architecture; the run rebuilds from the reference (trusted for the workspace by the command)
    to the accuracy it recorded, and records the noise and the in-training gradient sums as a preset's run does."""
    import json

    import torch

    from lenscape.analysis.evaluation import evaluate
    from lenscape.models.data import load_data
    from lenscape.models.training import TrainConfig, preset, run_id_for
    from lenscape.models.zoo import load_model

    out = _lenscape(
        "train",
        "--preset",
        "digits-mlp-noise10",
        "--epochs",
        "2",
        "--model",
        "tests.custom_nets:residual_cnn",
        "--kwargs",
        '{"width": 6, "blocks": 1}',
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    (rec,) = list_runs()
    cfg = TrainConfig.from_dict(rec["config"])
    assert (cfg.arch, cfg.builder, json.loads(cfg.builder_kwargs)) == (
        "custom",
        "tests.custom_nets:residual_cnn",
        {"blocks": 1, "width": 6},
    )
    assert cfg.label_noise == preset("digits-mlp-noise10").label_noise and rec["noise"] and rec.get("gradients")
    assert rec["run_id"] == run_id_for(cfg) and "tests.custom_nets:residual_cnn" in rec["name"]
    model = load_model(rec["run_id"], 2).model
    assert type(model).__name__ == "ResidualCNN"
    test = load_data(cfg.data, "test")
    acc = evaluate(model, torch.as_tensor(test.images), torch.as_tensor(test.labels)).accuracy
    assert acc == pytest.approx(rec["metrics"][-1]["test_acc"], abs=1e-6)
    # a zoo recipe's run id is what it was before custom architectures (no builder fields in its dict)
    assert "builder" not in preset("digits-mlp-noise10").to_dict()
