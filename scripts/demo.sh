#!/usr/bin/env bash
# Set up, then run the main job on the built-in SynthStories corpus: the quickstart
# sweep (18 small models on one token budget, each with two shorter budgets branched off,
# each trained and evaluated), then its report.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh demo
OUT=${OUT:-runs/quickstart-sweep}
echo "== the grid"
.venv/bin/tinyscale sweep plan sweeps/quickstart.py
echo "== training and evaluating every run (resumable: run this script again after a stop)"
.venv/bin/tinyscale sweep run sweeps/quickstart.py --sweep-dir "$OUT"
echo "== the report"
.venv/bin/tinyscale analyze "$OUT"
echo "open $OUT/report.html"
