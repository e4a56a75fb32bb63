#!/usr/bin/env bash
# From a fresh Debian 12 machine: install what is missing, build, create the
# data directory on first run (`custos init`), and start custosd on the
# embedded SQLCipher store, on loopback.
#   ./scripts/start.sh [--no-build]
#   CUSTOS_DATA_DIR (default ./custos-data)   CUSTOS_LISTEN (default 127.0.0.1:8443)
#   CUSTOS_SKIP_BUILD=1 (same as --no-build): use the binaries already in
#   $CUSTOS_BUILD_DIR (default build), or the installed ones on PATH.
# A checkout that was moved or copied rebuilds its stale build directory
# (scripts/build.sh detects it).
set -euo pipefail
cd "$(dirname "$0")/.."
SKIP_BUILD=${CUSTOS_SKIP_BUILD:-0}
for arg in "$@"; do
  case "$arg" in
    --no-build) SKIP_BUILD=1 ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "start.sh: unknown argument $arg (see --help)" >&2; exit 2 ;;
  esac
done
BUILD_DIR=${CUSTOS_BUILD_DIR:-build}
if [ "$SKIP_BUILD" != 1 ]; then
  ./scripts/deps.sh
  CUSTOS_TARGETS="custos custosd" ./scripts/build.sh
fi
CUSTOS=$BUILD_DIR/src/custos
CUSTOSD=$BUILD_DIR/src/http/custosd
if [ ! -x "$CUSTOS" ] || [ ! -x "$CUSTOSD" ]; then
  if command -v custos >/dev/null && command -v custosd >/dev/null; then
    CUSTOS=$(command -v custos)
    CUSTOSD=$(command -v custosd)
  else
    echo "start.sh: no custos/custosd in $BUILD_DIR or on PATH; run without --no-build" >&2
    exit 1
  fi
fi
DATA_DIR=${CUSTOS_DATA_DIR:-./custos-data}
LISTEN=${CUSTOS_LISTEN:-127.0.0.1:8443}
if [ ! -f "$DATA_DIR/custos.db" ]; then
  "$CUSTOS" --data-dir "$DATA_DIR" init
fi
echo
echo "Data directory: $DATA_DIR   (admin token: $DATA_DIR/admin.token, audit key: $DATA_DIR/audit.pub)"
echo "Try:  curl -s -H \"Authorization: Bearer \$(cat $DATA_DIR/admin.token)\" http://$LISTEN/v1/audit/checkpoint"
echo "CLI:  $CUSTOS --data-dir $DATA_DIR --help"
exec "$CUSTOSD" --data-dir "$DATA_DIR" --listen "$LISTEN"
