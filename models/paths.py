"""Where Lenscape keeps data and its own files. Two environment variables decide it.

LENSCAPE_DATA: the data root (torchvision layouts: MNIST/raw/..., cifar-10-batches-py/ or
               cifar10-jpg/{train,test}/...). Default: ~/.cache/lenscape/data.
LENSCAPE_HOME: trained runs, uploaded models, the job store and caches. Default: ~/.cache/lenscape.
"""

from __future__ import annotations

import os
from pathlib import Path


def home_dir() -> Path:
    path = Path(os.environ.get("LENSCAPE_HOME") or Path.home() / ".cache" / "lenscape")
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_root() -> Path:
    return Path(os.environ.get("LENSCAPE_DATA") or home_dir() / "data")


def runs_dir() -> Path:
    path = home_dir() / "runs"
    path.mkdir(parents=True, exist_ok=True)
    return path


def cache_dir(*parts: str) -> Path:
    path = home_dir().joinpath("cache", *parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def offline() -> bool:
    """True when downloads must not be tried (LENSCAPE_OFFLINE=1)."""
    return os.environ.get("LENSCAPE_OFFLINE", "") not in ("", "0", "false")
