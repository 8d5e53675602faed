#!/usr/bin/env bash
# The device check (docs/gpu.md): versions and devices, the train step's tokens/s and MFU
# at four shapes of gpt_neo and llama, the attention paths against the blocked XLA one,
# packing's models/hour at d64, the quickstart sweep end to end. About 8 minutes on a
# GPU; `--dry-run`: every stage at toy sizes, on CPU in about a minute.
#   bench/device_check.sh [--dry-run]      OUT=DIR (default ./device_check_out)
# Writes $OUT/device_check.json and $OUT/device_check.md (and each stage's rows under
# $OUT/stages/); exits 1 when a stage failed (the report says which, and keeps the rest).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-device_check_out}
PYTHON=${PYTHON:-.venv/bin/python}
[ -x "$PYTHON" ] || { echo "device check: no $PYTHON: run scripts/setup.sh gpu (or demo) first, or set PYTHON" >&2; exit 2; }
exec env PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" bench/device_check.py --out "$OUT" "$@"
