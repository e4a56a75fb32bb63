#!/usr/bin/env bash
# Mutation testing: applies each single-line mutant in tests/mutants/*.patch
# in turn, rebuilds incrementally, and runs the suite until a test fails
# (the mutant is killed) or the whole suite passes (it survived). The
# mutant's hint (binary:gtest-filter) is built and run first, so most die in
# seconds without relinking the rest of the suite.
# One line per mutant, then `mutants: K killed, S survived`.
#   scripts/mutate.sh                 every mutant
#   scripts/mutate.sh consent erase   only mutants whose file name contains a word
#   CUSTOS_MUTATE_BUILD_DIR           build directory (default build-mutate)
# Exit status: 0 when every mutant was killed, 1 otherwise. The source tree
# is restored after each mutant, and on interrupt.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${CUSTOS_MUTATE_BUILD_DIR:-build-mutate}
export CCACHE_DIR=${CCACHE_DIR:-$HOME/.cache/ccache}
BINARIES=(core_tests regulations_tests audit_fmt_tests cli_tests ops_tests http_tests http_edge_tests http_identity_tests)

if ! git diff --quiet -- src audit include; then
  echo "mutate: src/, audit/ or include/ has uncommitted changes; commit or stash them first" >&2
  exit 2
fi

# Without -Werror: a mutant often leaves a variable or parameter unused, and
# a warning is not a test that killed it.
cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCUSTOS_WERROR=OFF -DCUSTOS_BUILD_BENCHMARKS=OFF >/dev/null
build_targets() { cmake --build "$BUILD" -j"$(nproc)" --target "$@" >"$BUILD/mutate-build.log" 2>&1; }
build() { build_targets "${BINARIES[@]}" custos custosd custos-audit; }
# The hint's binary and the programs its tests start: a mutant the hint kills
# never relinks the other test binaries (most of a mutant's cost before).
hint_targets() {
  case "$1" in
    http*) echo "$1 custos custosd custos-audit" ;;
    *) echo "$1 custos custos-audit" ;;
  esac
}
echo "mutate: building the unmutated tree in $BUILD" >&2
build || { echo "mutate: the unmutated tree does not build; see $BUILD/mutate-build.log" >&2; exit 2; }
path_of() { find "$BUILD/tests" -maxdepth 2 -type f -name "$1" -perm -u+x | head -1; }

applied=""
restore() { if [[ -n "$applied" ]]; then git apply -R "$applied"; applied=""; fi; }
trap 'restore' EXIT
trap 'restore; exit 130' INT TERM

# Runs one binary with a filter; prints the first failing test's name and
# returns 1 if any test failed. Each run is bounded (a mutant may hang).
first_failure() {
  local bin="$1" filter="$2" out
  out=$(cd "$BUILD" && timeout 600 "$bin" --gtest_filter="$filter" --gtest_fail_fast --gtest_brief=1 2>&1) && return 0
  local failed
  failed=$(grep -m1 -oE '^\[  FAILED  \] [A-Za-z0-9_/.]+' <<<"$out" | awk '{print $4}')
  echo "$(basename "$bin"):${failed:-crash-or-timeout}"
  return 1
}

killed=0; survived=0; invalid=0
table=()
shopt -s nullglob
for patch in tests/mutants/*.patch; do
  name=$(basename "$patch" .patch)
  if [[ $# -gt 0 ]]; then
    match=0
    for w in "$@"; do [[ "$name" == *"$w"* ]] && match=1; done
    [[ $match -eq 1 ]] || continue
  fi
  if ! git apply --check "$patch" 2>/dev/null; then
    echo "$name: STALE (does not apply; regenerate with tests/mutants/catalogue.py)"
    invalid=$((invalid + 1)); continue
  fi
  git apply "$patch"; applied="$patch"
  hint=$(sed -n 's/^# hint: //p' "$patch")
  by=""
  if [[ -n "$hint" ]]; then
    # shellcheck disable=SC2046
    if ! build_targets $(hint_targets "${hint%%:*}"); then
      echo "$name: INVALID (does not compile)"
      invalid=$((invalid + 1)); restore; continue
    fi
    bin=$(path_of "${hint%%:*}")
    [[ -n "$bin" ]] && by=$(first_failure "$(realpath "$bin")" "${hint#*:}") || true
  fi
  if [[ -z "$by" ]]; then
    if ! build; then
      echo "$name: INVALID (does not compile)"
      invalid=$((invalid + 1)); restore; continue
    fi
    for b in "${BINARIES[@]}"; do
      bin=$(path_of "$b"); [[ -n "$bin" ]] || continue
      by=$(first_failure "$(realpath "$bin")" "*") || break
    done
  fi
  if [[ -n "$by" ]]; then
    echo "$name: killed by $by"; killed=$((killed + 1)); table+=("| $name | killed | $by |")
  else
    echo "$name: SURVIVED"; survived=$((survived + 1)); table+=("| $name | survived | |")
  fi
  restore
done
build || true  # leave the build directory matching the tree
printf '%s\n' "${table[@]}" >"$BUILD/mutants.md"
summary="mutants: $killed killed, $survived survived"
[[ $invalid -eq 0 ]] || summary+=" ($invalid stale or invalid)"
echo "$summary"
[[ $survived -eq 0 && $invalid -eq 0 ]]
