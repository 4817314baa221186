#!/usr/bin/env bash
# Runs the full test suite on the real stack (creates .venv and prepares the models first if needed).
# Usage: bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
# The browser test drives Debian's Chromium (no browser download by Playwright).
if [ ! -x /usr/bin/chromium ]; then
  sudo_=""; [ "$(id -u)" -eq 0 ] || sudo_="sudo"
  $sudo_ apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq chromium chromium-driver >/dev/null
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 GRADIO_ANALYTICS_ENABLED=False
.venv/bin/assistant setup
exec .venv/bin/python -m pytest -ra "$@"
