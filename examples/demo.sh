#!/usr/bin/env bash
# The demo behind `make demo`: a worker on the example tasks module, one task submitted
# on behalf of a user and followed live until its result prints. Uses ./errands-demo.db
# (SQLite; created and migrated on first use). Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
export ERRANDS_DATABASE_URL=${ERRANDS_DATABASE_URL:-sqlite:///errands-demo.db}

"$BIN/errands" migrate
"$BIN/errands" worker examples.tasks:app --concurrency 4 &
worker=$!
trap 'kill -TERM $worker 2>/dev/null; wait $worker 2>/dev/null || true' EXIT

"$BIN/errands" submit examples.tasks:app count '{"to": 200, "delay": 0.02}' --owner demo-user --wait
echo
echo "Recent tasks (errands ls):"
"$BIN/errands" ls --limit 5
