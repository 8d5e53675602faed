#!/usr/bin/env bash
# Set up, then run the whole test suite (slow end-to-end tests included).
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit $?
.venv/bin/python -m pytest "$@"
rc=$?
if [ "$rc" = 5 ]; then echo "test: pytest collected no tests; that is a failure" >&2; exit 1; fi
exit "$rc"
