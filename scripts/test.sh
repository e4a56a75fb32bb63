#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine: installs what is
# missing, builds once (-Werror), lints the OpenAPI document (Redocly, pinned),
# runs every ctest suite two at a time, against SQLCipher and then again
# against a throwaway PostgreSQL 15 cluster (scripts/pg_cluster.sh).
#   CUSTOS_CI_CLANG=binaries (default)  also build the production binaries
#     (custos, custosd, custos-audit: every core, HTTP, CLI and verifier source)
#     in Release with clang 14 and -Werror: measured 357 s cold on this 2-core
#     machine, beside a ~1 min ctest run and the GCC build.
#   CUSTOS_CI_CLANG=full  the whole tree with clang (tests and benchmarks too; about
#     twice as long: not in the default run, so CI stays inside its 45 minutes).
#   CUSTOS_CI_CLANG=0     no clang build.
# The production binaries are also built in Release with GCC 12 (-O3 raises
# warnings -O2 does not, e.g. GCC 12's false -Wrestrict, bug 105329), so both
# compilers' Release builds are held to -Werror on every run.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
./scripts/build.sh
./scripts/lint_openapi.sh
CUSTOS_BUILD_DIR=build-gcc-release CUSTOS_TARGETS="custos custosd custos-audit" ./scripts/build.sh \
  -DCMAKE_BUILD_TYPE=Release
case "${CUSTOS_CI_CLANG:-binaries}" in
  0) ;;
  binaries)
    CUSTOS_BUILD_DIR=build-clang CUSTOS_TARGETS="custos custosd custos-audit" ./scripts/build.sh \
      -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER=clang++-14 ;;
  full)
    CUSTOS_BUILD_DIR=build-clang ./scripts/build.sh -DCMAKE_BUILD_TYPE=Release -DCMAKE_CXX_COMPILER=clang++-14 ;;
  *) echo "test.sh: CUSTOS_CI_CLANG must be 0, binaries or full" >&2; exit 2 ;;
esac
# A throwaway PostgreSQL 15 cluster for the second backend, stopped on exit
# whatever happens. The backend conformance tests use it in both runs
# (CUSTOS_TEST_PG_URL); the second run puts every test vault in it
# (CUSTOS_TEST_STORE: a fresh schema per vault, see tests/support).
PG_DIR=$(mktemp -d /tmp/custos-pg-XXXXXX)
PG_CLUSTER="$(pwd)/scripts/pg_cluster.sh"
trap '"$PG_CLUSTER" stop "$PG_DIR" >/dev/null 2>&1 || true' EXIT
export CUSTOS_TEST_PG_URL
CUSTOS_TEST_PG_URL=$("$PG_CLUSTER" start "$PG_DIR")
cd "${CUSTOS_BUILD_DIR:-build}"
echo "custos: ctest against SQLCipher"
sqlcipher_rc=0
ctest --output-on-failure -j2 --timeout 600 || sqlcipher_rc=$?
echo "custos: ctest against PostgreSQL ($CUSTOS_TEST_PG_URL)"
pg_rc=0
CUSTOS_TEST_STORE=$CUSTOS_TEST_PG_URL ctest --output-on-failure -j2 --timeout 600 -E '^packaging\.' || pg_rc=$?
echo "custos: SQLCipher run exit $sqlcipher_rc, PostgreSQL run exit $pg_rc"
[ "$sqlcipher_rc" -eq 0 ] && [ "$pg_rc" -eq 0 ]
