#!/usr/bin/env bash
# Runs the full test suite on the real stack (creates .venv and prepares the models first if needed).
# Usage: bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 GRADIO_ANALYTICS_ENABLED=False
.venv/bin/assistant setup
exec .venv/bin/python -m pytest -ra "$@"
