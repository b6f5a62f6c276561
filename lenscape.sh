#!/usr/bin/env bash
# ./lenscape.sh app   — create .venv, install Lenscape, start the app and open it in the browser
# ./lenscape.sh test  — install the test dependencies (and Chromium where apt-get can), run the whole suite
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}

venv() {
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  # uv installs the same packages from the same places in a third of pip's time (22 s instead of 67 s
  # for a fresh .[test] here: torch's CUDA build, with its nvidia libraries, is 6.6 GB to unpack, which
  # uv does in parallel and pip file by file). Where uv cannot be had or fails, pip does it
  # (LENSCAPE_PIP=1 asks for pip).
  if [ -z "${LENSCAPE_PIP:-}" ] && uv_install "$1"; then return 0; fi
  .venv/bin/python -m pip install -q --upgrade pip
  # pip byte-compiles one file at a time (35 of the 90 s a fresh install took, for 18,000 files);
  # compileall does it on all cores, as uv does (see uv_install for why it is done up front), and
  # skips what is compiled already. Bytecode writing stays on: where PYTHONDONTWRITEBYTECODE is set, as
  # on our CI machines, every process would compile what it imports again (777 s instead of 600).
  .venv/bin/python -m pip install -q --no-compile -e "$1"
  .venv/bin/python -m compileall -q -j 0 "$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" >/dev/null || true
}

uv_install() {
  [ -x .venv/bin/uv ] || .venv/bin/python -m pip install -q uv >/dev/null 2>&1 || return 1
  local out args=()
  # pip's configuration on this machine (its files and PIP_* variables: indexes, local wheels,
  # version caps) as uv's options, so that both install the same versions from the same places. A
  # setting uv would not honour the same way (no-index, trusted-host, ...) leaves the install to pip.
  out=$(.venv/bin/python - <<'PY'
import ast, subprocess, sys
flags = {"index-url": "--index-url", "extra-index-url": "--extra-index-url", "find-links": "--find-links",
         "constraint": "--constraint"}
harmless = {"cert", "default-timeout", "timeout", "disable-pip-version-check", "retries", "quiet", "verbose",
            "progress-bar", "no-cache-dir", "cache-dir", "root-user-action", "no-color"}
listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=True)
lines = sorted(listed.stdout.splitlines(), key=lambda line: line.startswith(":env:"))  # PIP_* override files
chosen = {}
for line in lines:
    key, _, value = line.partition("=")
    name = key.rsplit(".", 1)[-1]
    if name in flags:
        text = ast.literal_eval(value) if value.strip() else ""
        chosen[name] = str(text).split()  # pip's lists: whitespace or newline separated
    elif name not in harmless:
        sys.exit(f"pip setting {key} has no uv equivalent here")
for name, values in chosen.items():
    for v in values:
        print(flags[name], v, sep="\n")
PY
  ) || return 1
  [ -z "$out" ] || mapfile -t args <<< "$out"
  # unsafe-best-match: the newest version on any index, as pip picks (uv would otherwise take a package
  # from the first index that has it, older versions included). --compile-bytecode: every module
  # compiled once, on all cores, at install (about 20 s more). Without it each process compiles what
  # it imports until some process has written the .pyc; the suite's first minutes start two workers,
  # servers and command-line runs at once, each compiling torch, plotly, streamlit and ray again: a
  # fresh clone's suite took 745 s without it and 613 s with it, the same day, back to back.
  if ! .venv/bin/uv pip install -q --python .venv/bin/python --index-strategy unsafe-best-match \
      --compile-bytecode ${args[@]+"${args[@]}"} -e "$1"; then
    echo "uv could not install; pip will" >&2
    return 1
  fi
}
unset PYTHONDONTWRITEBYTECODE

# numba compiles umap-learn and pynndescent on their first use and keeps what it compiled on disk
# (analysis/embedding.py turns that on for umap's functions): 24 CPU-seconds in a new environment, paid by
# every process that projects before one of them has written the cache. In the test suite's first
# minutes several did so at once (a fresh clone's Similarity browser test took 55 s instead of 19).
# Once per environment, in the background, right after the install; matplotlib's font list likewise.
warm_caches() {
  [ -e .venv/.lenscape-warm ] && return 0
  (OMP_NUM_THREADS=1 .venv/bin/python -c 'import numpy as np, matplotlib.font_manager
from lenscape.analysis import ProjectionConfig, project
project(np.random.default_rng(0).random((64, 8)), ProjectionConfig(method="umap"))' >/dev/null 2>&1 \
    && touch .venv/.lenscape-warm) &
}

ensure_chromium() {
  for exe in "${LENSCAPE_CHROMIUM:-}" /usr/bin/chromium /usr/bin/chromium-browser; do
    [ -n "$exe" ] && [ -x "$exe" ] && return 0
  done
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "installing Debian's chromium for the browser test..."
    apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null
  else
    echo "note: no Chromium found; the browser test is skipped outside CI (set LENSCAPE_CHROMIUM)" >&2
  fi
}

case "${1:-}" in
  app)
    venv .
    warm_caches
    port=${LENSCAPE_PORT:-8501}
    # headless avoids Streamlit's first-run e-mail prompt; we open the browser ourselves
    (sleep 4 && .venv/bin/python -m webbrowser -t "http://localhost:$port" >/dev/null 2>&1 || true) &
    exec .venv/bin/lenscape app --server.port "$port" ;;
  test)
    venv ".[test]"
    warm_caches
    ensure_chromium
    shift
    # two workers, each test file on one of them (a file's server, workspace and trained models are its own):
    # about 9.5 minutes of suite on 2 cores instead of 14. LENSCAPE_TEST_WORKERS=0 runs in this process.
    # one torch thread per process: the two workers, and the servers and browsers the browser tests start,
    # share 2 cores; OpenMP pools of 2 threads in each spun against each other (a test subset took 75 s
    # instead of 42)
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
    exec .venv/bin/python -m pytest -n "${LENSCAPE_TEST_WORKERS:-2}" --dist loadfile --no-loadscope-reorder "$@" ;;
  *)
    echo "usage: ./lenscape.sh app | ./lenscape.sh test" >&2
    exit 2 ;;
esac
