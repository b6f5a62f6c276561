"""Where Lenscape keeps data and its own files. Two environment variables decide it.

LENSCAPE_DATA: the data root (torchvision layouts: MNIST/raw/..., cifar-10-batches-py/ or
               cifar10-jpg/{train,test}/...). Default: ~/.cache/lenscape/data.
LENSCAPE_HOME: trained runs, uploaded models, the job store and caches. Default: ~/.cache/lenscape.
LENSCAPE_ALLOWED_ROOTS: more folders whose files a page user may name (os.pathsep-separated); only
               the person starting the server sets it. The data root and LENSCAPE_HOME always are,
               and so are the folders given to lenscape.add_model or `lenscape app --data`.
"""

from __future__ import annotations

import os
from pathlib import Path

from lenscape.errors import InvalidInputError


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


def allowed_roots() -> list[Path]:
    """The folders a path typed in a page (or arriving in a link or a bundle) may lie in: the data
    root, the workspace and LENSCAPE_ALLOWED_ROOTS, each with its symlinks resolved."""
    from lenscape.models.custom import trusted_folders

    extra = [p for p in os.environ.get("LENSCAPE_ALLOWED_ROOTS", "").split(os.pathsep) if p.strip()]
    # the image folders the server's operator gave to add_model / --data, stored resolved: one that has
    # since become a symlink (its parent's owner swapped it) is not followed to wherever it points now
    extra += [f for f in trusted_folders() if os.path.realpath(f) == f]
    return [Path(os.path.realpath(os.path.expanduser(p))) for p in (data_root(), home_dir(), *extra)]


def user_path(text: str, what: str = "the path") -> Path:
    """`text` as a real path (symlinks followed) inside the allowed roots. Outside them the message
    is the same whether or not the file exists, and nothing of the file is read."""
    text = str(text).strip()
    if not text:
        raise InvalidInputError(f"{what}: expected a path; got nothing")
    roots = allowed_roots()
    try:
        path = Path(os.path.realpath(os.path.expanduser(text)))
    except (OSError, ValueError):  # a NUL byte, or a name too long
        path = None
    if path is None or not any(path.is_relative_to(root) for root in roots):
        raise InvalidInputError(
            f"{what} {text!r} is not allowed: Lenscape reads only inside "
            f"{', '.join(map(str, roots))}. The person who starts the server can allow "
            f"more folders with LENSCAPE_ALLOWED_ROOTS."
        )
    return path
