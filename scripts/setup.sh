#!/usr/bin/env bash
# Create .venv (once) and install trustser with its pinned dependencies into it. Idempotent and quick when done.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# An old pip (23.x) backtracks for many minutes on this dependency set; a current one resolves in seconds.
.venv/bin/python -m pip install --quiet --upgrade "pip>=25"
stamp=.venv/.trustser-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --progress-bar off -e ".[test]"
  touch "$stamp"
fi
