#!/usr/bin/env bash
# Set up, then run the whole test suite (slow end-to-end tests included).
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit $?
# Two workers, each taking whole test files (module fixtures such as the SLURM cluster
# stay in one process), in the order tests/conftest.py gives them (longest first;
# --no-loadscope-reorder is pytest-xdist >= 3.8's, pyproject's test extra).
.venv/bin/python -m pytest -n 2 --dist loadfile --no-loadscope-reorder "$@"
rc=$?
if [ "$rc" = 5 ]; then echo "test: pytest collected no tests; that is a failure" >&2; exit 1; fi
exit "$rc"
