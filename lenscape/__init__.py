"""Lenscape: an interactive lab for looking inside PyTorch vision classifiers.

One installed package. Its parts live in the repository's top-level folders (DESIGN.md) and are
installed under this name: `lenscape.analysis` (the papers' methods, pure tensor code, the public
API for notebooks), `lenscape.models`, `lenscape.backend`, `lenscape.ui`, and the Streamlit app
(`app.py`, `pages/`, `assets/`). `lenscape.errors` holds the errors every layer raises.

From a source checkout (an editable install, or a test run from the repository) the parts are found
beside this folder; in an installed wheel they sit inside it.
"""

from __future__ import annotations

from pathlib import Path as _Path

__version__ = "0.1.0"

_here = _Path(__file__).resolve().parent
if not (_here / "analysis").is_dir() and (_here.parent / "analysis" / "__init__.py").is_file():
    __path__.append(str(_here.parent))  # type: ignore[name-defined]  # a source checkout: ../analysis is lenscape.analysis


def __getattr__(name: str):
    """`lenscape.add_model` and `lenscape.show` (lenscape.api), imported on first use."""
    if name in ("add_model", "show"):
        from lenscape import api

        return getattr(api, name)
    raise AttributeError(f"module 'lenscape' has no attribute {name!r}")
