#!/usr/bin/env bash
# Builds Custos with clang 14 under a sanitizer and runs tests in that build.
#   scripts/sanitize.sh asan [ctest args...]
#       AddressSanitizer + UndefinedBehaviorSanitizer (undefined behaviour
#       aborts: -fno-sanitize-recover), every target but the benchmarks, into
#       build-asan; then ctest with the given arguments (none: every test).
#   scripts/sanitize.sh tsan [ctest args...]
#       ThreadSanitizer, the test binaries that run threads and custosd (whose
#       io threads, workers, audit folder and outbox sender share state), into
#       build-tsan; then those tests (or ctest with the given arguments).
# Both builds are -Werror with clang's -Wthread-safety, so the lock
# annotations (include/custos/util/mutex.h) are checked on every run.
# Reports from third-party code we cannot fix are suppressed, each with its
# reason, in tests/sanitizers/ (lsan.supp, ubsan.supp).
# A sanitizer report fails the test that caused it: a test binary exits
# non-zero, and a custosd under test aborts on the report
# (halt_on_error), so its client sees the server die.
#   CUSTOS_SANITIZE_BUILD_ONLY=1  build, do not run ctest.
set -euo pipefail
cd "$(dirname "$0")/.."
kind=${1:-}
shift || true
# Report where the bug is, with symbols, and fail at the first one.
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=0:halt_on_error=1:detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1:print_suppressions=0:suppressions=$(pwd)/tests/sanitizers/ubsan.supp}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$(pwd)/tests/sanitizers/lsan.supp:print_suppressions=0}
export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1:suppressions=$(pwd)/tests/sanitizers/tsan.supp}
export ASAN_SYMBOLIZER_PATH=${ASAN_SYMBOLIZER_PATH:-$(command -v llvm-symbolizer-14 || true)}
export TSAN_SYMBOLIZER_PATH=${TSAN_SYMBOLIZER_PATH:-$ASAN_SYMBOLIZER_PATH}
case "$kind" in
  asan)
    # -O1 with line tables: the usual ASan trade (fast enough to run, quick
    # to compile, exact stack lines); asserts stay on. CUSTOS_FUZZ adds the
    # libFuzzer coverage hooks to every object and builds the fuzz targets,
    # so this one build also serves the fuzz smoke (scripts/fuzz.sh with
    # FUZZ_BUILD_DIR=build-asan).
    CUSTOS_BUILD_DIR=build-asan ./scripts/build.sh -DCMAKE_CXX_COMPILER=clang++-14 -DCUSTOS_SANITIZE=ON \
      -DCUSTOS_FUZZ=ON -DCUSTOS_BUILD_BENCHMARKS=OFF -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -gline-tables-only"
    dir=build-asan
    default_args=()
    ;;
  tsan)
    CUSTOS_BUILD_DIR=build-tsan \
      CUSTOS_TARGETS="custos custosd custos-audit core_tests ops_tests http_tests http_edge_tests http_outbox_tests" \
      ./scripts/build.sh -DCMAKE_CXX_COMPILER=clang++-14 -DCUSTOS_TSAN=ON -DCUSTOS_BUILD_BENCHMARKS=OFF
    dir=build-tsan
    # The tests that start threads of their own, and every test of custosd.
    default_args=(-R '^(AuditJournal|AuditJournalSubjects|AuditLog|SqlcipherStore|Keys|Backup|HttpTest|HttpProcess|HttpListen|HttpEdge|HttpEdgeStreams|OutboxTest)\.')
    ;;
  *)
    echo "usage: scripts/sanitize.sh asan|tsan [ctest args...]" >&2
    exit 2
    ;;
esac
[ "${CUSTOS_SANITIZE_BUILD_ONLY:-0}" = 1 ] && exit 0
if [ "$#" -eq 0 ]; then set -- "${default_args[@]}"; fi
ctest --test-dir "$dir" --output-on-failure -j2 --timeout 900 "$@"
