#!/usr/bin/env bash
# Sets everything up on a fresh machine (.venv, packages, models, the domains' indexes) and runs the main job:
# the Gradio chat (one tab per domain) on the embedded default (CPU vLLM, SmolLM2-135M + domain adapters,
# Qdrant embedded), at http://127.0.0.1:7860.
# Usage: bash scripts/run.sh                                  # the chat app
#        bash scripts/run.sh app --port 8080 --host 0.0.0.0    # app options (python app.py --help)
#        bash scripts/run.sh ask healthcare "..."              # any `assistant` command: a one-shot answer, eval, serve ...
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 GRADIO_ANALYTICS_ENABLED=False
.venv/bin/assistant setup
if [ $# -eq 0 ] || [ "$1" = "app" ]; then
  [ $# -gt 0 ] && shift
  exec .venv/bin/python app.py "$@"
fi
exec .venv/bin/assistant "$@"
