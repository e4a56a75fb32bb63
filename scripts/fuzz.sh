#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz) with clang, ASan and UBSan into
# build-fuzz (CUSTOS_FUZZ=ON, ccache) and runs each for a given time on a
# copy of its seed corpus and regression inputs. Prints per target:
# executions, exec/s, corpus size, coverage (libFuzzer's cov and ft) and
# whether it found anything; exits 1 on a finding (its input is kept under
# build-fuzz/fuzz-artifacts/<target>/; make it a regression input:
# tests/fuzz/regressions/<target>/), 2 on a usage or build error.
#
#   scripts/fuzz.sh [SECONDS-PER-TARGET] [TARGET...]   (default 60 s, every target)
#   scripts/fuzz.sh --smoke                            (CI: 10 s per target, 80 s in all)
#
#   FUZZ_JOBS          build jobs (default: nproc)
#   FUZZ_NICE          niceness of the fuzz runs, each in a session whose
#                      autogroup gets it too (default 19): they yield to builds
#   FUZZ_TIMEOUT       seconds one input may run before it is a finding
#                      (default 25; wall clock, so a campaign that is paused
#                      with SIGSTOP, e.g. for a benchmark, needs more; or end
#                      a sitting early with SIGINT or SIGTERM to the script: its executions
#                      still count, as result "interrupted")
#   FUZZ_NO_BUILD=1    run what the build directory holds, do not build
#   FUZZ_BUILD_DIR     build directory (default build-fuzz; CI runs the smoke
#                      from build-asan, which scripts/sanitize.sh asan builds
#                      with the fuzz targets, after the ASan test runs)
#   FUZZ_MERGE=1       merge new interesting inputs back into tests/fuzz/corpus
#   FUZZ_CORPUS_DIR    keep each target's working corpus in DIR/<target> and
#                      resume from it (seeded from the repo's corpus the first
#                      time): one campaign run in several sittings. Each run
#                      appends a line to DIR/<target>.history (UTC end, seconds,
#                      executions, corpus, cov, ft, result) and the script
#                      prints the campaign's executions so far.
#                      (libFuzzer -merge=1: only inputs that add coverage)
#   ASAN_OPTIONS       passed on to the targets. For a long campaign,
#                      malloc_context_size=2 keeps 2 frames of each allocation's
#                      stack instead of 30: detection is the same, a report
#                      names fewer frames (replay its input for the rest), and
#                      policy_yaml ran ~1.45x faster (ASan's stack depot, which
#                      grows through a sitting, had taken 11-25 % of its time)
#   CUSTOS_BUILD_LOCK  lock file held while building (default
#                      /tmp/custos-build.lock; empty: no lock). Fuzz runs
#                      never hold it.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD_DIR=${FUZZ_BUILD_DIR:-build-fuzz}
ALL_TARGETS=(audit_entry checkpoint_note audit_export http_request policy_yaml journal_recovery service_json block_row)

seconds=60
if [[ "${1:-}" == "--smoke" ]]; then
  seconds=10
  shift
elif [[ "${1:-}" =~ ^[0-9]+$ ]]; then
  seconds=$1
  shift
elif [[ -n "${1:-}" && ! " ${ALL_TARGETS[*]} " =~ " $1 " ]]; then
  echo "usage: scripts/fuzz.sh [SECONDS-PER-TARGET | --smoke] [TARGET...]; targets: ${ALL_TARGETS[*]}" >&2
  exit 2
fi
targets=("$@")
[[ ${#targets[@]} -eq 0 ]] && targets=("${ALL_TARGETS[@]}")
for t in "${targets[@]}"; do
  [[ " ${ALL_TARGETS[*]} " =~ " $t " ]] || { echo "fuzz.sh: unknown target '$t' (${ALL_TARGETS[*]})" >&2; exit 2; }
done

if [[ "${FUZZ_NO_BUILD:-0}" != 1 ]]; then
  export CCACHE_DIR=${CCACHE_DIR:-$HOME/.cache/ccache}
  lock=${CUSTOS_BUILD_LOCK-/tmp/custos-build.lock}
  locked() { if [[ -n "$lock" ]]; then flock "$lock" "$@"; else "$@"; fi; }
  # Configured every time (seconds): a build directory configured before a
  # target was added has no rule for it until CMake runs again.
  locked cmake -S . -B "$BUILD_DIR" -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCUSTOS_FUZZ=ON -DCUSTOS_BUILD_TESTS=OFF -DCUSTOS_BUILD_BENCHMARKS=OFF >/dev/null || exit 2
  locked cmake --build "$BUILD_DIR" -j"${FUZZ_JOBS:-$(nproc)}" --target "${targets[@]/#/fuzz_}" || exit 2
fi

work=$(mktemp -d /tmp/custos-fuzz-run-XXXXXX)
trap 'rm -rf "$work"' EXIT
found=0
stop=0
printf '%-18s %12s %9s %8s %7s %7s  %s\n' target execs exec/s corpus cov ft result
for t in "${targets[@]}"; do
  bin="$BUILD_DIR/tests/fuzz/fuzz_$t"
  [[ -x "$bin" ]] || { echo "fuzz.sh: $bin missing (build it, or drop FUZZ_NO_BUILD)" >&2; exit 2; }
  corpus="$work/$t"
  [[ -n "${FUZZ_CORPUS_DIR:-}" ]] && corpus="$FUZZ_CORPUS_DIR/$t"
  artifacts="$ROOT/$BUILD_DIR/fuzz-artifacts/$t"
  mkdir -p "$corpus" "$artifacts"
  cp -rn tests/fuzz/corpus/"$t"/. "$corpus"/ 2>/dev/null || true
  if [[ -d tests/fuzz/regressions/$t ]]; then cp -rn tests/fuzz/regressions/"$t"/. "$corpus"/; fi
  log="$ROOT/$BUILD_DIR/fuzz-$t.log"
  # policy_yaml: yaml-cpp under ASan parses ~1 KB per ms, so inputs are kept
  # to the size of its small seeds (make_corpus.py, POLICY_SEED_MAX); the
  # whole shipped files in its corpus are replayed by ctest, cut here.
  max_len=65536
  [[ $t == policy_yaml ]] && max_len=4096
  [[ $t == block_row ]] && max_len=8192  # a compact row of 64 entries, or a short length-prefixed one
  set +e
  # In a session of its own whose autogroup is niced too: with the kernel's
  # autogroups (CONFIG_SCHED_AUTOGROUP, Debian's default) CPU is shared
  # between sessions first, so a plain nice inside a session started with
  # setsid still took ~60 % of a core from a build in another session.
  # Being in another session, it does not get the terminal's Ctrl-C: the
  # script passes SIGINT and SIGTERM on, records the sitting, and stops.
  setsid -w sh -c 'echo "$0" >/proc/self/autogroup 2>/dev/null; exec nice -n "$0" "$@"' "${FUZZ_NICE:-19}" \
    "$bin" -max_total_time="$seconds" -print_final_stats=1 -timeout="${FUZZ_TIMEOUT:-25}" \
    -rss_limit_mb=2560 -max_len="$max_len" -artifact_prefix="$artifacts/" "$corpus" >"$log" 2>&1 &
  fuzz_pid=$!
  trap 'stop=1; kill -INT "$fuzz_pid" 2>/dev/null' INT TERM
  wait "$fuzz_pid"
  rc=$?
  while kill -0 "$fuzz_pid" 2>/dev/null; do  # wait was cut short by the trap
    wait "$fuzz_pid"
    rc=$?
  done
  trap - INT TERM
  set -e
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  last=$(grep -aE '^#[0-9]+.*cov: ' "$log" | tail -1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([0-9]*\/[0-9]*[a-zA-Z]*\).*/\1/p' <<<"$last")
  result=ok
  if grep -aqE '^==[0-9]+==ERROR|^SUMMARY: |deadly signal|FUZZ INVARIANT BROKEN' "$log"; then
    result="FINDING (exit $rc; $log; inputs in $artifacts)"
    found=1
  elif [[ $rc -ne 0 ]] && grep -aq 'libFuzzer: run interrupted' "$log"; then
    # Stopped early (SIGINT or SIGTERM, e.g. to free the cores for a
    # benchmark): its executions count, nothing was found.
    result=interrupted
  elif [[ $rc -ne 0 ]]; then
    result="FINDING (exit $rc; $log; inputs in $artifacts)"
    found=1
  fi
  printf '%-18s %12s %9s %8s %7s %7s  %s\n' "$t" "${execs:-?}" "${rate:-?}" "${corp:-?}" "${cov:-?}" "${ft:-?}" "$result"
  if [[ -n "${FUZZ_CORPUS_DIR:-}" ]]; then
    history="$FUZZ_CORPUS_DIR/$t.history"
    echo "$(date -u +%FT%TZ) $seconds ${execs:-0} ${corp:-?} ${cov:-?} ${ft:-?} ${result%% *}" >>"$history"
    echo "$t: campaign so far $(awk '{n += $3} END {print n}' "$history") executions in $(wc -l <"$history") runs ($history)"
  fi
  if [[ "${FUZZ_MERGE:-0}" == 1 && $result == ok ]]; then
    mkdir -p tests/fuzz/corpus/"$t"
    nice -n "${FUZZ_NICE:-19}" "$bin" -merge=1 -max_len="$max_len" tests/fuzz/corpus/"$t" "$corpus" >>"$log" 2>&1 || true
  fi
  if [[ $stop == 1 ]]; then break; fi
done
exit $found
