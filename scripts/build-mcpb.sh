#!/usr/bin/env bash
# Packs dist/pixazo-mcp.mcpb, a Claude Desktop bundle that runs `pixazo-mcp stdio`: the package and its
# locked dependencies (built for this machine's platform: a Linux build runs on Linux), a launcher, an
# icon, and packaging/mcpb/manifest.json (the Pixazo key as a sensitive user setting). Validated and
# packed with the official mcpb tool (pinned in packaging/mcpb), then smoke-tested from the bundle.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PYTHON:-python3}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
BUNDLE="$WORK/bundle"
mkdir -p "$BUNDLE/server" "$ROOT/dist"

cp "$ROOT/packaging/mcpb/manifest.json" "$BUNDLE/"
"$PY" -m pip install --quiet --disable-pip-version-check --no-compile --target "$BUNDLE/server/lib" \
  --no-deps -r "$ROOT/requirements.lock"
"$PY" -m pip install --quiet --disable-pip-version-check --no-compile --target "$BUNDLE/server/lib" \
  --no-deps "$ROOT"
cat >"$BUNDLE/server/main.py" <<'PY'
"""The bundle's entry point: pixazo-mcp's own command (Claude Desktop passes `stdio`)."""
import sys

from app.cli import main

sys.exit(main(sys.argv[1:] or ["stdio"]))
PY
# The server's icon (hills under a sky), as the PNG a bundle needs.
"$PY" - "$BUNDLE/icon.png" <<'PY'
import sys

from PIL import Image, ImageDraw

image = Image.new("RGBA", (512, 512), (0, 0, 0, 0))
ImageDraw.Draw(image).polygon([(0, 480), (160, 224), (288, 384), (384, 256), (512, 480)], fill=(0, 0, 128, 255))
image.save(sys.argv[1])
PY

(cd "$ROOT/packaging/mcpb" && npm ci --no-audit --no-fund --loglevel=error)
MCPB="$ROOT/packaging/mcpb/node_modules/.bin/mcpb"
"$MCPB" validate "$BUNDLE/manifest.json"
# The bundle runs as Claude Desktop would start it (its own lib on PYTHONPATH).
PYTHONPATH="$BUNDLE/server/lib" "$PY" "$BUNDLE/server/main.py" --version
"$MCPB" pack "$BUNDLE" "$ROOT/dist/pixazo-mcp.mcpb" >/dev/null
"$MCPB" info "$ROOT/dist/pixazo-mcp.mcpb"
