import subprocess
import sys
from pathlib import Path

from lenscape.models.zoo import list_runs

ROOT = Path(__file__).resolve().parents[2]


def test_cli_trains_seeds_into_the_workspace(lenscape_home):
    out = subprocess.run(
        [sys.executable, "-m", "lenscape", "train", "--preset", "digits-mlp", "--seeds", "0-1", "--epochs", "2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    runs = list_runs()
    assert sorted(r["seed"] for r in runs) == [0, 1]
    assert all(len(r["checkpoints"]) == 3 for r in runs)
    assert "test acc" in out.stdout


def test_cli_rejects_unknown_preset():
    out = subprocess.run(
        [sys.executable, "-m", "lenscape", "train", "--preset", "nope"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode != 0 and "invalid choice" in out.stderr
