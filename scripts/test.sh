#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine: installs what is
# missing, lints the OpenAPI document (Redocly, pinned), builds, runs the
# fault-injection and verifier-bounds tests in a plain GCC Release build, then
# every ctest suite two at a time under AddressSanitizer and
# UndefinedBehaviorSanitizer: once against SQLCipher (the fault loops aside,
# which just ran) and once more against a throwaway PostgreSQL 15 cluster
# (scripts/pg_cluster.sh); then a smoke of every fuzz target
# (scripts/fuzz.sh --smoke, 10 s each). Prints the elapsed time per step.
#
# Builds, each -Werror:
#   build-gcc-release  GCC 12, Release (what the package ships; -O3 raises
#                      warnings -O2 does not, e.g. GCC 12's false -Wrestrict,
#                      bug 105329): custos, custosd, custos-audit, and the two
#                      test binaries whose checks only mean something without
#                      a sanitizer: fault_tests (its fault loops fork a child
#                      per fault, five times slower under ASan) and
#                      audit_fmt_tests (Bounds: the verifier's 64 MiB and 5 s
#                      on hostile files);
#   build-asan         clang 14, ASan+UBSan (fatal), -Wthread-safety (the lock
#                      annotations of include/custos/util/mutex.h), libFuzzer
#                      coverage hooks: every test, test binary and fuzz target
#                      (scripts/sanitize.sh asan).
# One instrumented build serves the tests, the sanitizers and the fuzzers,
# which is what keeps this run under 45 minutes on two cores from a cold
# ccache (36 min measured, docs/testing.md). The configuration matrix
# (journal on/off, key file/passphrase) is part of ctest (matrix.*); the
# PostgreSQL pass is its other store backend.
# Not in this run, for time: ThreadSanitizer (scripts/sanitize.sh tsan),
# coverage (scripts/coverage.sh), the mutation catalogue (scripts/mutate.sh),
# long fuzzing (scripts/fuzz.sh 225) and the benchmarks (built by
# scripts/build.sh); docs/testing.md has their latest results.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
stamp() { echo "custos: $1 at $((SECONDS - started)) s"; }
./scripts/deps.sh
./scripts/lint_openapi.sh
stamp "dependencies and lint done"
CUSTOS_BUILD_DIR=build-gcc-release CUSTOS_TARGETS="custos custosd custos-audit fault_tests audit_fmt_tests" \
  ./scripts/build.sh -DCMAKE_BUILD_TYPE=Release
stamp "GCC Release build done"
CUSTOS_SANITIZE_BUILD_ONLY=1 ./scripts/sanitize.sh asan
stamp "clang ASan+UBSan build done"
# A throwaway PostgreSQL 15 cluster for the second backend, stopped on exit
# whatever happens. The backend conformance tests use it in both runs
# (CUSTOS_TEST_PG_URL); the second run puts every test vault in it
# (CUSTOS_TEST_STORE: a fresh schema per vault, see tests/support).
PG_DIR=$(mktemp -d /tmp/custos-pg-XXXXXX)
PG_CLUSTER="$(pwd)/scripts/pg_cluster.sh"
trap '"$PG_CLUSTER" stop "$PG_DIR" >/dev/null 2>&1 || true' EXIT
export CUSTOS_TEST_PG_URL
CUSTOS_TEST_PG_URL=$("$PG_CLUSTER" start "$PG_DIR")
# Unsanitized (GCC Release): power cuts and fault loops, the verifier's bounds.
plain_only='^(FaultVfs|Crash|PowerCut|FaultLoop|Bounds)\.'
echo "custos: fault injection and verifier bounds, GCC Release"
plain_rc=0
ctest --test-dir build-gcc-release --output-on-failure -j2 --timeout 900 -R "$plain_only" || plain_rc=$?
stamp "GCC Release run done (exit $plain_rc)"
echo "custos: ctest against SQLCipher under ASan+UBSan"
sqlcipher_rc=0
./scripts/sanitize.sh asan -E '^FaultLoop\.' || sqlcipher_rc=$?
stamp "SQLCipher run done (exit $sqlcipher_rc)"
echo "custos: ctest against PostgreSQL ($CUSTOS_TEST_PG_URL) under ASan+UBSan"
pg_rc=0
# Not again on PostgreSQL: the package, the fuzz replays, the contract proxy
# run and the browser's console flows (the HTTP contract, and the console
# that speaks it, are the same whichever store serves them: HttpTest covers
# the API on PostgreSQL), the check that every verb and flag has a test (it
# reads --help), and the matrix's passphrase + journal combination
# (matrix.journal runs: on PostgreSQL the journal is the audit_pending table).
CUSTOS_TEST_STORE=$CUSTOS_TEST_PG_URL ./scripts/sanitize.sh asan \
  -E "^(packaging|fuzz|surface)\.|^(contract_prism|browser_console)\$|^matrix\.passphrase_journal\$|$plain_only" ||
  pg_rc=$?
stamp "PostgreSQL run done (exit $pg_rc)"
echo "custos: fuzz smoke (every target, 10 s each)"
fuzz_rc=0
FUZZ_BUILD_DIR=build-asan FUZZ_NO_BUILD=1 ./scripts/fuzz.sh --smoke || fuzz_rc=$?
stamp "fuzz smoke done (exit $fuzz_rc)"
echo "custos: GCC run exit $plain_rc, SQLCipher run exit $sqlcipher_rc, PostgreSQL run exit $pg_rc, fuzz smoke exit $fuzz_rc"
[ "$plain_rc" -eq 0 ] && [ "$sqlcipher_rc" -eq 0 ] && [ "$pg_rc" -eq 0 ] && [ "$fuzz_rc" -eq 0 ]
