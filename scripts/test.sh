#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine: installs what is
# missing, builds once, runs every ctest suite two at a time.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
./scripts/build.sh
cd "${CUSTOS_BUILD_DIR:-build}"
ctest --output-on-failure -j2 --timeout 600
