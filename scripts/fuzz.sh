#!/usr/bin/env bash
# Fuzz the API with schemathesis against its own /openapi.json: every operation, every phase
# (examples, coverage, fuzzing, stateful), every check but one, on a real `callhistory serve` over
# a fresh database with demo data. Fails on any server error or response that breaks the schema.
#
#   scripts/fuzz.sh [MAX_EXAMPLES]        (DATABASE_URL honoured; SQLite by default)
#
# One worker: with two, Hypothesis (describing a strategy) ran ast.parse in two threads at once
# and CPython 3.11 failed with "SystemError: AST constructor recursion depth mismatch" (a race in
# the interpreter, not in the API), failing CI once.
#
# Excluded:
# - POST /api/v1/auth/logout and DELETE /api/v1/tokens/{token} can revoke the very token the fuzzer
#   uses (the rest would be only 401s);
# - the `positive_data_acceptance` check: some rules cross fields (conversation <= duration, status
#   consistent with disposition, a local time in 1970-2099 that exists in the zone), which JSON
#   Schema cannot say, so a schema-valid body may rightly get a 422.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
MAX_EXAMPLES=${1:-50}
DATA=$(mktemp -d)
PORT=${FUZZ_PORT:-8765}
export DATA_DIR=$DATA APP_KEY=fuzz-key-0123456789abcdefghijklmnopqrstuvwxyz
trap 'kill $SERVER 2>/dev/null || true; rm -rf "$DATA"' EXIT
TOKEN=$("$BIN/callhistory" demo --calls 300 | tail -1 | sed 's/^token: //')
"$BIN/callhistory" serve --port "$PORT" >"$DATA/serve.log" 2>&1 &
SERVER=$!
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$PORT/openapi.json" >/dev/null && break
  sleep 0.1
done
"$BIN/schemathesis" run "http://127.0.0.1:$PORT/openapi.json" \
  -H "Authorization: Bearer $TOKEN" \
  --checks all --exclude-checks positive_data_acceptance \
  --exclude-path /api/v1/auth/logout --exclude-path '/api/v1/tokens/{token}' \
  --max-examples "$MAX_EXAMPLES" --workers 1 --seed 1
if grep -q "Traceback" "$DATA/serve.log"; then
  echo "the server logged a traceback:" >&2
  grep -B2 -A30 "Traceback" "$DATA/serve.log" | head -80 >&2
  exit 1
fi
