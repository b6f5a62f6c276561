"""The architecture's import rules (DESIGN.md), checked on the source's syntax tree: every import
statement, at the top of a module or inside a function."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Installed as one package: `lenscape.analysis` is the folder analysis/, and so on. lenscape/ holds what
# belongs to no layer: the errors every layer raises (`lenscape.errors`), the command line and the
# notebook API (front ends, like app.py).
OURS = {"app", "pages", "ui", "backend", "models", "analysis", "errors"}
ALLOWED = {
    "pages": {"ui", "backend", "models", "analysis", "errors"},
    "ui": {"ui", "backend", "models", "analysis", "errors"},
    "backend": {"backend", "analysis", "models", "errors"},
    "analysis": {"analysis", "models", "errors"},
    "models": {"models", "errors"},
}
# analysis → models only for data types and seeded initialization
ANALYSIS_MAY_USE = {"models.data", "models.seeding", "models.architectures"}
# The one crossing against the grain, on purpose: training evaluates with the same batched
# evaluation every view uses (one loop, one out-of-memory retry), imported inside the function; and
# records the paper's gradient accounting with the same clean/noisy split the Memorization view uses.
EXCEPTIONS = {("models/training.py", "analysis.evaluation"), ("models/training.py", "analysis.memorization")}


def _ours(module: str) -> str:
    """`lenscape.analysis.cka` → `analysis.cka`; `lenscape` alone, or another package's module, as it is."""
    return module.removeprefix("lenscape.") if module.startswith("lenscape.") else module


def _imports(path: Path) -> set[str]:
    """Full module names imported anywhere in the file; relative imports are refused."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path.relative_to(ROOT)}: relative import (line {node.lineno})"
            names.add(node.module)
    return {_ours(n) for n in names}


def _problems() -> list[str]:
    problems = []
    files = [(f, p) for f in ALLOWED for p in (ROOT / f).rglob("*.py")] + [("app", ROOT / "app.py")]
    for folder, path in files:
        rel = str(path.relative_to(ROOT))
        for module in _imports(path):
            top = module.split(".")[0]
            if (rel, module) in EXCEPTIONS:
                continue
            if top in OURS and folder in ALLOWED and top not in ALLOWED[folder]:
                problems.append(f"{rel} imports {module}")
            if folder == "analysis" and top == "models" and module not in ANALYSIS_MAY_USE:
                problems.append(f"{rel} imports {module} (analysis takes only data types from models)")
            if folder in ("backend", "analysis", "models") and top == "streamlit":
                problems.append(f"{rel} imports streamlit")
    return problems


def test_import_rules_and_streamlit_only_in_the_ui():
    assert not _problems(), _problems()


def test_the_rules_catch_an_import_inside_a_function(tmp_path, monkeypatch):
    bad = ROOT / "models" / "_layout_probe.py"
    bad.write_text("def f():\n    from lenscape.ui.common import backend\n    import streamlit\n")
    try:
        found = _problems()
    finally:
        bad.unlink()
    assert "models/_layout_probe.py imports ui.common" in found and "models/_layout_probe.py imports streamlit" in found


def test_analysis_functions_take_no_model_from_files():
    for path in (ROOT / "analysis").rglob("*.py"):
        text = path.read_text()
        assert "open(" not in text and "torch.load" not in text, f"{path} does file I/O"


def test_every_page_is_in_the_apps_navigation_and_linked_from_home():
    """A page missing from st.navigation is "Page not found" when the app runs from app.py."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    app = (root / "app.py").read_text()
    for page in sorted((root / "pages").glob("*.py")):
        assert f'st.Page("pages/{page.name}"' in app, page.name
        assert f'("pages/{page.name}", "' in app, page.name  # in VIEWS, which Home links
