#!/usr/bin/env bash
# Sets everything up on a fresh machine (.venv, packages, models, the domains' indexes) and runs the main job:
# the service, one process on the embedded default (CPU vLLM, SmolLM2-135M + domain adapters, Qdrant embedded):
# the chat app at http://127.0.0.1:8000/ and the OpenAI-compatible API at http://127.0.0.1:8000/v1.
# Usage: bash scripts/run.sh                                  # the service (assistant serve)
#        bash scripts/run.sh serve --port 9000 --no-app        # serve options (assistant serve --help)
#        bash scripts/run.sh app --port 7860                   # the chat app alone (python app.py --help)
#        bash scripts/run.sh ask healthcare "..."              # any `assistant` command: a one-shot answer, eval ...
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 GRADIO_ANALYTICS_ENABLED=False
.venv/bin/assistant setup
if [ $# -eq 0 ]; then
  exec .venv/bin/assistant serve
fi
if [ "$1" = "app" ]; then
  shift
  exec .venv/bin/python app.py "$@"
fi
exec .venv/bin/assistant "$@"
