#!/usr/bin/env bash
# README command 2 (and CI): set up, install the Debian tools some tests use, run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if ! command -v espeak-ng >/dev/null 2>&1; then
  # espeak-ng speaks the sentence the converted Whisper must transcribe
  if [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && apt-get install -y -qq espeak-ng >/dev/null) || echo "warning: could not install espeak-ng"
  else
    echo "warning: espeak-ng missing and not root: the transcription tests will be skipped"
  fi
fi
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  # the scale tests start their own PostgreSQL (tests/scale_fixtures.py); without it they are skipped, saying so
  if [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) || echo "warning: could not install postgresql"
  else
    echo "warning: PostgreSQL missing and not root: the scale tests will be skipped"
  fi
fi
export MLFLOW_DISABLE_TELEMETRY=true
.venv/bin/ruff check trustser tests scripts  # lint first: seconds, and a failure names file and line
.venv/bin/ruff format --check trustser tests scripts  # formatting (ruff format fixes it)
.venv/bin/lint-imports --no-cache | tail -n 3  # layers run one way (pyproject.toml [tool.importlinter])
exec .venv/bin/python -m pytest -q "$@"
