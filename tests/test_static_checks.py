"""Lint, format and type checks, in the suite so that CI runs them (issue 24): ruff over the whole
repository, mypy over analysis/ and the job API (jobs, runners, store, codec, pieces, errors)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TYPED = [
    "-p",
    "lenscape.analysis",
    "-m",
    "lenscape.errors",
    "-m",
    "lenscape.backend.jobs",
    "-m",
    "lenscape.backend.runner",
    "-m",
    "lenscape.backend.codec",
    "-m",
    "lenscape.backend.store",
    "-m",
    "lenscape.backend.pieces",
    "-m",
    "lenscape.backend.kinds",
]


def _run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def test_ruff_finds_nothing():
    out = _run("ruff", "check", "--no-cache", ".")
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_code_is_formatted_as_ruff_formats_it():
    out = _run("ruff", "format", "--no-cache", "--check", ".")
    assert out.returncode == 0, out.stdout + out.stderr


def _package_tree(root: Path) -> Path:
    """lenscape/ as installed (analysis/ is lenscape/analysis, ...), as links: what mypy can read."""
    pkg = root / "lenscape"
    pkg.mkdir()
    for f in (ROOT / "lenscape").glob("*.py"):
        (pkg / f.name).symlink_to(f)
    for part in ("analysis", "backend", "models", "ui"):
        (pkg / part).symlink_to(ROOT / part, target_is_directory=True)
    return root


@pytest.fixture(scope="module")
def mypy_cache(tmp_path_factory):
    """One cache for both mypy runs: the second reads torch's analysis from it instead of doing it again."""
    return tmp_path_factory.mktemp("mypy-cache")


def test_mypy_types_the_analysis_api_and_the_job_api(tmp_path, mypy_cache):
    tree = _package_tree(tmp_path)
    out = _run("mypy", "--config-file", str(ROOT / "pyproject.toml"), "--cache-dir", str(mypy_cache), *TYPED, cwd=tree)
    assert out.returncode == 0, out.stdout + out.stderr


def test_mypy_would_see_a_type_error(tmp_path, mypy_cache):
    """The check reads the code it claims to: a wrong type in analysis/ fails it."""
    tree = _package_tree(tmp_path)
    (tree / "lenscape" / "analysis").unlink()
    copy = tree / "lenscape" / "analysis"
    copy.mkdir()
    for f in (ROOT / "analysis").glob("*.py"):
        (copy / f.name).write_text(f.read_text())
    (copy / "roar.py").write_text((copy / "roar.py").read_text() + "\n\nBROKEN: int = 'not a number'\n")
    out = _run(
        "mypy",
        "--config-file",
        str(ROOT / "pyproject.toml"),
        "--cache-dir",
        str(mypy_cache),
        "-m",
        "lenscape.analysis.roar",
        cwd=tree,
    )
    if out.returncode == 0:
        pytest.fail("mypy accepted a str assigned to an int")
    assert "roar.py" in out.stdout and "assignment" in out.stdout
