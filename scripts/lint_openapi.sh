#!/usr/bin/env bash
# Lints docs/openapi.yaml with Redocly CLI, pinned (installed from npm once
# into a cache directory; Node.js from Debian). Exits non-zero on any error.
#   CUSTOS_TOOLS_DIR (default ~/.cache/custos-tools)
set -euo pipefail
cd "$(dirname "$0")/.."
REDOCLY_VERSION=2.77.0
TOOLS=${CUSTOS_TOOLS_DIR:-$HOME/.cache/custos-tools}/redocly-$REDOCLY_VERSION
if ! command -v npm >/dev/null; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends nodejs npm
fi
if [ ! -x "$TOOLS/node_modules/.bin/redocly" ]; then
  mkdir -p "$TOOLS"
  npm install --prefix "$TOOLS" --no-audit --no-fund --loglevel=error "@redocly/cli@$REDOCLY_VERSION" >/dev/null
fi
export REDOCLY_TELEMETRY=off REDOCLY_SUPPRESS_UPDATE_NOTICE=true
"$TOOLS/node_modules/.bin/redocly" lint docs/openapi.yaml 2>&1 | grep -v '[║╔╚]'
exit "${PIPESTATUS[0]}"
