#!/usr/bin/env bash
# From a fresh Debian 12 machine: install what is missing, build, create the
# data directory on first run (`custos init`), and start custosd on the
# embedded SQLCipher store, on loopback.
#   CUSTOS_DATA_DIR (default ./custos-data)   CUSTOS_LISTEN (default 127.0.0.1:8443)
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
./scripts/build.sh
BUILD_DIR=${CUSTOS_BUILD_DIR:-build}
DATA_DIR=${CUSTOS_DATA_DIR:-./custos-data}
LISTEN=${CUSTOS_LISTEN:-127.0.0.1:8443}
if [ ! -f "$DATA_DIR/custos.db" ]; then
  "$BUILD_DIR/src/custos" --data-dir "$DATA_DIR" init
fi
echo
echo "Data directory: $DATA_DIR   (admin token: $DATA_DIR/admin.token, audit key: $DATA_DIR/audit.pub)"
echo "Try:  curl -s -H \"Authorization: Bearer \$(cat $DATA_DIR/admin.token)\" http://$LISTEN/v1/audit/checkpoint"
echo "CLI:  $BUILD_DIR/src/custos --data-dir $DATA_DIR --help"
exec "$BUILD_DIR/src/http/custosd" --data-dir "$DATA_DIR" --listen "$LISTEN"
