#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine: installs what is
# missing, builds once (-Werror), lints the OpenAPI document (Redocly, pinned),
# runs every ctest suite two at a time.
#   CUSTOS_CI_CLANG=1  also build Release with clang 14 (-Werror, no tests run).
#     Off by default: see docs/operations.md, "Building" — a cold clang build of
#     the tree does not fit CI's 45-minute budget beside the GCC build and the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
./scripts/build.sh
./scripts/lint_openapi.sh
if [ "${CUSTOS_CI_CLANG:-0}" = 1 ]; then
  command -v clang++-14 >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends clang-14
  CUSTOS_BUILD_DIR=build-clang ./scripts/build.sh -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER=clang++-14 \
    -DCUSTOS_BUILD_BENCHMARKS=OFF
fi
cd "${CUSTOS_BUILD_DIR:-build}"
ctest --output-on-failure -j2 --timeout 600
