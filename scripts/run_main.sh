#!/usr/bin/env bash
# README command 1: set up, then run the real Whisper Base over EmoDB's 5 folds, logging to ./mlflow.db.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export MLFLOW_DISABLE_TELEMETRY=${MLFLOW_DISABLE_TELEMETRY:-true}
export MLFLOW_TRACKING_URI=${MLFLOW_TRACKING_URI:-sqlite:///$PWD/mlflow.db}
exec .venv/bin/trustser run --backbone "${BACKBONE:-whisper_base}" --dataset "${DATASET:-emodb}" "$@"
