#!/usr/bin/env bash
# Mutation testing of lenscape.analysis (not in CI). mutmut 3 names a mutant after its file's path, and
# the tests import `lenscape.analysis.x`: so it runs in a copy of the tree laid out as installed
# (lenscape/analysis/x.py), where the two names agree.
#
#   .ci/mutmut.sh                                   every mutant of analysis/
#   .ci/mutmut.sh 'lenscape.analysis.saliency.x_token_grid*'   only some (mutmut's name globs)
#
# Needs the test dependencies and mutmut in .venv (.venv/bin/pip install mutmut).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
WORK=${LENSCAPE_MUTMUT_DIR:-/tmp/lenscape-mutmut}
rm -rf "$WORK" && mkdir -p "$WORK/lenscape"
cp lenscape/*.py "$WORK/lenscape/"
for part in analysis models backend ui; do cp -r "$part" "$WORK/lenscape/$part"; done
cp -r tests README.md "$WORK/"
mkdir -p "$WORK/pages" && cp -r app.py pages assets .streamlit "$WORK/" 2>/dev/null || true
python3 - "$REPO/pyproject.toml" "$WORK/pyproject.toml" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
start = text.index("[tool.mutmut]")
end = text.index("\n[", start + 1)
block = text[start:end]
block = block.replace('paths_to_mutate = ["analysis/"]', 'paths_to_mutate = ["lenscape/analysis/"]')
block = re.sub(r'also_copy = \[[^\]]*\]', 'also_copy = ["lenscape/", "tests/", "README.md"]', block)
pytest = text[text.index("[tool.pytest.ini_options]"):]
pytest = pytest[: pytest.index("\n[", 1)] if "\n[" in pytest[1:] else pytest
open(sys.argv[2], "w").write(block + "\n\n" + pytest + "\n")
PY
cd "$WORK"
OMP_NUM_THREADS=1 "$REPO/.venv/bin/mutmut" run --max-children 2 "$@" || true
"$REPO/.venv/bin/mutmut" results
