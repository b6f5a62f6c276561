"""Run mutmut 3 over `analysis/` although the code imports as `lenscape.analysis`.

mutmut names a mutant by its file's path (`analysis/hessian.py` -> `analysis.hessian.x_fn__mutmut_1`), while a
mutated function finds out whether it is the one under test by its module's `__name__`
(`lenscape.analysis.hessian`). Since the move to one package (`package-dir`) the two differ, and mutmut stops with
"tests recorded trampoline hits but none match any mutant key". This wrapper maps the repository's folders to their
installed names (the same mapping as `pyproject.toml`) before mutmut computes any name; mutmut forks its workers,
so they inherit it. Nothing else of mutmut changes.

    OMP_NUM_THREADS=1 .venv/bin/python bench/mutation.py run --max-children 2
    .venv/bin/python bench/mutation.py results
"""

from __future__ import annotations

import sys
from pathlib import Path

import mutmut.__main__ as mutmut_main
import mutmut.mutation.file_mutation as file_mutation
import mutmut.utils.format_utils as format_utils

# The installed name of each folder that mutmut may mutate (pyproject.toml's package-dir).
PACKAGES = {
    "analysis": "lenscape.analysis",
    "models": "lenscape.models",
    "backend": "lenscape.backend",
    "ui": "lenscape.ui",
}

_path_name = format_utils.get_mutant_name


def installed_mutant_name(relative_source_path: Path, mutant_method_name: str) -> str:
    """mutmut's name for a mutant, with the folder replaced by the name the code is imported under."""
    name = _path_name(relative_source_path, mutant_method_name)
    head, dot, rest = name.partition(".")
    return f"{PACKAGES[head]}{dot}{rest}" if head in PACKAGES else name


for module in (format_utils, file_mutation, mutmut_main):
    module.get_mutant_name = installed_mutant_name  # type: ignore[attr-defined]

if __name__ == "__main__":
    sys.argv[0] = "mutmut"
    sys.exit(mutmut_main.cli())
