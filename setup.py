"""The Streamlit app travels inside the `lenscape` package: `lenscape app` runs `lenscape/app.py`, whose
`pages/` and `.streamlit/config.toml` Streamlit finds beside it. Everything else is in pyproject.toml.
(An editable install needs none of this: `lenscape/__init__.py` finds the folders beside it.)"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
APP_FILES = [
    "app.py",
    ".streamlit/config.toml",
    *(str(p.relative_to(ROOT)) for p in sorted((ROOT / "pages").glob("*.py"))),
    *(str(p.relative_to(ROOT)) for p in sorted((ROOT / "assets").rglob("*")) if p.is_file()),
]


class BuildWithApp(build_py):
    def run(self) -> None:
        super().run()
        for rel in APP_FILES:
            target = Path(self.build_lib) / "lenscape" / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ROOT / rel, target)


setup(cmdclass={"build_py": BuildWithApp})
