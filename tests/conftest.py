"""Tests read data from ../shared/data (full MNIST and CIFAR-10) unless LENSCAPE_DATA says
otherwise, and keep every workspace in a temporary folder."""

import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
if not os.environ.get("LENSCAPE_DATA") and SHARED.is_dir():
    os.environ["LENSCAPE_DATA"] = str(SHARED)
os.environ.setdefault("LENSCAPE_OFFLINE", "1")
os.environ.setdefault("LENSCAPE_DEVICE", "cpu")


@pytest.fixture(autouse=True)
def lenscape_home(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("LENSCAPE_HOME", str(home))
    return home


def has_data(name: str) -> bool:
    root = Path(os.environ.get("LENSCAPE_DATA", ""))
    return {"mnist": root / "MNIST" / "raw" / "train-images-idx3-ubyte",
            "cifar10": root / "cifar10-jpg" / "test"}[name].exists()
