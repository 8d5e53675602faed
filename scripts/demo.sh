#!/usr/bin/env bash
# Set up, then run the main job on the built-in SynthStories corpus.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
OUT=${OUT:-runs/demo}
mkdir -p "$OUT"
echo "== preparing SynthStories"
.venv/bin/tinyscale data prepare --config sweeps/quickstart.py --data-dir "$OUT/data"
echo "== training the quickstart model"
.venv/bin/tinyscale train --config sweeps/quickstart.py --config.data.dir="$OUT/data" \
  --workdir "$OUT/quickstart"
