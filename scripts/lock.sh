#!/usr/bin/env bash
# Regenerates requirements.lock: the exact runtime dependencies the container installs.
set -euo pipefail
cd "$(dirname "$0")/.."
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
python3 -m venv "$TMP/venv"
"$TMP/venv/bin/pip" install --quiet --upgrade pip
"$TMP/venv/bin/pip" install --quiet .
{
  echo "# Runtime dependencies of pixazo-mcp, pinned. Regenerate with scripts/lock.sh; CI checks it against pyproject.toml."
  "$TMP/venv/bin/pip" freeze --exclude pixazo-mcp
} > requirements.lock
echo "wrote requirements.lock"
