#!/usr/bin/env bash
# Build the optional lmms-eval environment (.venv-lmms, gitignored) from nothing, on CPU.
#
#   bash scripts/envs/lmms_eval.sh            # creates .venv-lmms in the repo root
#   VENV=/path/to/venv bash scripts/envs/lmms_eval.sh
#
# Pins (scripts/envs/lmms_eval-constraints.txt): lmms-eval 0.7.3, torch 2.13.0 (CPU build),
# torchvision 0.28.0 (the release made for torch 2.13), av<16. The index's torchvision 0.28.0 is a
# CUDA build: scripts/envs/torchvision_cpu.py guards its two fake-kernel registrations so that it
# imports beside CPU torch. torchcodec, if anything pulled it in, is removed: it raises OSError at
# import without its CUDA/FFmpeg libraries and transformers then fails instead of falling back.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${VENV:-$root/.venv-lmms}"
python="${PYTHON:-python3}"

start=$(date +%s)
"$python" -m venv "$venv"
# shellcheck disable=SC1091
. "$venv/bin/activate"
pip install -q -c "$here/lmms_eval-constraints.txt" \
    -e "$root[test,lmms-eval]"
pip uninstall -q -y torchcodec 2>/dev/null || true
python "$here/torchvision_cpu.py"
python - <<'PY'
import importlib.metadata as md
import torch, torchvision, transformers, lmms_eval  # noqa: F401  (fails here, not in the tests)
print("lmms-eval env:", ", ".join(f"{p} {md.version(p)}" for p in
      ("lmms-eval", "torch", "torchvision", "transformers", "av", "anchor-ot")))
PY
echo "lmms-eval env ready in $(( $(date +%s) - start )) s: $venv"
