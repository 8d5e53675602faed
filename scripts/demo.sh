#!/usr/bin/env bash
# Set up, then run the main job on the built-in SynthStories corpus.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
OUT=${OUT:-runs/demo}
mkdir -p "$OUT"
.venv/bin/tinyscale data prepare --data-dir "$OUT/data"
