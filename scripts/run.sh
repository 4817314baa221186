#!/usr/bin/env bash
# Sets everything up on a fresh machine (.venv, packages, models, the domain's index) and runs the main job:
# a one-shot grounded, cited answer on the embedded default (CPU vLLM, SmolLM2-135M + domain adapter, Qdrant embedded).
# Usage: bash scripts/run.sh                      # the example question below
#        bash scripts/run.sh ask legal "..."      # any `assistant` command: ask, retrieve, serve, index, eval ...
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 GRADIO_ANALYTICS_ENABLED=False
.venv/bin/assistant setup
if [ $# -eq 0 ]; then
  set -- ask healthcare "Do mitochondria play a role in remodelling lace plant leaves during programmed cell death?"
fi
exec .venv/bin/assistant "$@"
