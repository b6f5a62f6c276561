"""The architecture's import rules (DESIGN.md), checked on the source."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OURS = {"app", "pages", "ui", "backend", "models", "analysis"}
ALLOWED = {"pages": {"ui", "backend", "models", "analysis"}, "ui": {"ui", "backend", "models", "analysis"},
           "backend": {"backend", "analysis", "models"}, "analysis": {"analysis", "models"}, "models": {"models"}}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_import_rules_and_streamlit_only_in_the_ui():
    problems = []
    for folder, allowed in ALLOWED.items():
        for path in (ROOT / folder).rglob("*.py"):
            imported = _imports(path)
            if bad := (imported & OURS) - allowed:
                problems.append(f"{path.relative_to(ROOT)} imports {sorted(bad)}")
            if folder in ("backend", "analysis", "models") and "streamlit" in imported:
                problems.append(f"{path.relative_to(ROOT)} imports streamlit")
    assert not problems, problems


def test_analysis_functions_take_no_model_from_files():
    for path in (ROOT / "analysis").rglob("*.py"):
        text = path.read_text()
        assert "open(" not in text and "torch.load" not in text, f"{path} does file I/O"
