#!/usr/bin/env bash
# The demo behind `make cli-demo`: a worker on the example tasks module, one task
# submitted on behalf of a user and followed live until its result prints. Uses its own
# database, ./errands-cli-demo.db (SQLite; created and migrated on first use), not the
# web demo's errands-demo.db: set ERRANDS_CLI_DEMO_DATABASE_URL for another. Every
# command names it with --database-url. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
DB=${ERRANDS_CLI_DEMO_DATABASE_URL:-sqlite:///errands-cli-demo.db}

"$BIN/errands" migrate --database-url "$DB"
"$BIN/errands" worker examples.tasks:app --concurrency 4 --database-url "$DB" &
worker=$!
trap 'kill -TERM $worker 2>/dev/null; wait $worker 2>/dev/null || true' EXIT

"$BIN/errands" submit examples.tasks:app count '{"to": 200, "delay": 0.02}' --owner demo-user \
  --wait --database-url "$DB"
echo
echo "Recent tasks (errands ls):"
"$BIN/errands" ls --limit 5 --database-url "$DB"
