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
#   CUSTOS_MUTATE_LANES               mutants run at once (default: the number
#                                     of cores)
#   CUSTOS_BUILD_LOCK                 lock held for the whole run (default
#                                     /tmp/custos-build.lock; empty: none)
# Exit status: 0 when every mutant was killed, 1 otherwise.
#
# The run mutates copies, never the working tree: each lane is a git
# worktree of the tracked files as they are now (`git stash create`:
# uncommitted edits included, untracked files not) with its own build
# directory. A mutant's work is one compile, a few links and one test binary,
# each single-threaded, so two lanes on two cores take about half the time
# of one.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUILD=$(realpath -m "${CUSTOS_MUTATE_BUILD_DIR:-build-mutate}")
LANES=${CUSTOS_MUTATE_LANES:-$(nproc)}
[[ "$LANES" =~ ^[1-9][0-9]*$ ]] || { echo "mutate: CUSTOS_MUTATE_LANES must be a positive number" >&2; exit 2; }
export CCACHE_DIR=${CCACHE_DIR:-$HOME/.cache/ccache}
BINARIES=(core_tests regulations_tests audit_fmt_tests cli_tests ops_tests http_tests http_edge_tests http_identity_tests)

# The run compiles on every core for its whole length: it holds the
# machine's build lock throughout, so no other build competes with it.
lock=${CUSTOS_BUILD_LOCK-/tmp/custos-build.lock}
if [[ -n "$lock" && "${CUSTOS_MUTATE_HOLDS_LOCK:-}" != 1 ]]; then
  CUSTOS_MUTATE_HOLDS_LOCK=1 exec flock "$lock" "$0" "$@"
fi

patches=()
shopt -s nullglob
for patch in tests/mutants/*.patch; do
  name=$(basename "$patch" .patch)
  if [[ $# -gt 0 ]]; then
    match=0
    for w in "$@"; do [[ "$name" == *"$w"* ]] && match=1; done
    [[ $match -eq 1 ]] || continue
  fi
  patches+=("$patch")
done
(( LANES > ${#patches[@]} )) && LANES=${#patches[@]}
(( LANES >= 1 )) || LANES=1
jobs=$(( ($(nproc) + LANES - 1) / LANES ))

# The tracked files as they are now, as a commit object (nothing is stashed).
rev=$(git stash create)
rev=${rev:-$(git rev-parse HEAD)}
mkdir -p "$BUILD"
git worktree prune

tree_of() { echo "$BUILD/lane$1/tree"; }
build_of() { echo "$BUILD/lane$1/build"; }

# Without -Werror: a mutant often leaves a variable or parameter unused, and
# a warning is not a test that killed it. -O1 without debug information and
# lld: a mutant's rebuild is one unit and a few links, and -O2 -g compiled
# ~1.8x slower for nothing a verdict needs (NDEBUG as in every build: the
# tests, not assertions, must kill a mutant).
prepare_lane() {
  local tree build
  tree=$(tree_of "$1"); build=$(build_of "$1")
  if [[ -e "$tree/.git" ]]; then
    git -C "$tree" checkout -q --detach --force "$rev"
  else
    rm -rf "$tree"
    git worktree add -q --detach --force "$tree" "$rev"
  fi
  cmake -S "$tree" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -DNDEBUG" \
    -DCMAKE_EXE_LINKER_FLAGS=-fuse-ld=lld -DCUSTOS_WERROR=OFF -DCUSTOS_BUILD_BENCHMARKS=OFF >/dev/null
}

# Builds targets in a lane. CCACHE_BASEDIR makes the lanes' paths relative,
# so the second lane's first build is served from the first lane's cache.
build_targets() {
  local lane=$1 j=$2
  shift 2
  CCACHE_BASEDIR=$(tree_of "$lane") cmake --build "$(build_of "$lane")" -j"$j" --target "$@" \
    >"$BUILD/lane$lane/build.log" 2>&1
}
build_all() { build_targets "$1" "$2" "${BINARIES[@]}" custos custosd custos-audit; }
# The hint's binary and the programs its tests start: a mutant the hint kills
# never relinks the other test binaries.
hint_targets() {
  case "$1" in
    http*) echo "$1 custos custosd custos-audit" ;;
    *) echo "$1 custos custos-audit" ;;
  esac
}
path_of() { find "$(build_of "$1")/tests" -maxdepth 2 -type f -name "$2" -perm -u+x | head -1; }

# Runs one binary with a filter; prints the first failing test's name and
# returns 1 if any test failed. Each run is bounded (a mutant may hang).
first_failure() {
  local lane=$1 bin=$2 filter=$3 out failed
  out=$(cd "$(build_of "$lane")" && timeout 600 "$bin" --gtest_filter="$filter" --gtest_fail_fast --gtest_brief=1 2>&1) &&
    return 0
  failed=$(grep -m1 -oE '^\[  FAILED  \] [A-Za-z0-9_/.]+' <<<"$out" | awk '{print $4}')
  echo "$(basename "$bin"):${failed:-crash-or-timeout}"
  return 1
}

# One lane: every LANES-th mutant from its index. Prints a line per mutant
# and appends `verdict|name|by` to its results file.
run_lane() {
  local lane=$1 tree results i patch name hint bin by started
  tree=$(tree_of "$lane"); results="$BUILD/lane$lane/results"
  : >"$results"
  for ((i = lane - 1; i < ${#patches[@]}; i += LANES)); do
    patch=${patches[$i]}; name=$(basename "$patch" .patch); started=$SECONDS
    if ! git -C "$tree" apply "$ROOT/$patch" 2>/dev/null; then
      echo "$name: STALE (does not apply; regenerate with tests/mutants/catalogue.py)"
      echo "invalid|$name|" >>"$results"; continue
    fi
    hint=$(sed -n 's/^# hint: //p' "$patch")
    by=""
    if [[ -n "$hint" ]]; then
      # shellcheck disable=SC2046
      if ! build_targets "$lane" "$jobs" $(hint_targets "${hint%%:*}"); then
        echo "$name: INVALID (does not compile)"
        echo "invalid|$name|" >>"$results"; git -C "$tree" reset -q --hard; continue
      fi
      bin=$(path_of "$lane" "${hint%%:*}")
      [[ -n "$bin" ]] && by=$(first_failure "$lane" "$(realpath "$bin")" "${hint#*:}") || true
    fi
    if [[ -z "$by" ]]; then
      if ! build_all "$lane" "$jobs"; then
        echo "$name: INVALID (does not compile)"
        echo "invalid|$name|" >>"$results"; git -C "$tree" reset -q --hard; continue
      fi
      for b in "${BINARIES[@]}"; do
        bin=$(path_of "$lane" "$b"); [[ -n "$bin" ]] || continue
        by=$(first_failure "$lane" "$(realpath "$bin")" "*") || break
      done
    fi
    if [[ -n "$by" ]]; then
      echo "$name: killed by $by ($((SECONDS - started)) s)"; echo "killed|$name|$by" >>"$results"
    else
      echo "$name: SURVIVED ($((SECONDS - started)) s)"; echo "survived|$name|" >>"$results"
    fi
    git -C "$tree" reset -q --hard
  done
}

echo "mutate: ${#patches[@]} mutants of $(git rev-parse --short HEAD)$([[ -n "$(git stash create)" ]] && echo " + uncommitted edits") in $LANES lanes under $BUILD" >&2
for ((lane = 1; lane <= LANES; ++lane)); do
  prepare_lane "$lane"
  build_all "$lane" "$(nproc)" || {
    echo "mutate: the unmutated tree does not build; see $BUILD/lane$lane/build.log" >&2
    exit 2
  }
done
echo "mutate: unmutated builds done after $((SECONDS / 60)) min $((SECONDS % 60)) s" >&2

pids=()
for ((lane = 1; lane <= LANES; ++lane)); do
  run_lane "$lane" &
  pids+=($!)
done
trap 'kill "${pids[@]}" 2>/dev/null; exit 130' INT TERM
for pid in "${pids[@]}"; do wait "$pid"; done

killed=0; survived=0; invalid=0
table=()
while IFS='|' read -r verdict name by; do
  case "$verdict" in
    killed) killed=$((killed + 1)); table+=("| $name | killed | $by |") ;;
    survived) survived=$((survived + 1)); table+=("| $name | survived | |") ;;
    *) invalid=$((invalid + 1)); table+=("| $name | $verdict | |") ;;
  esac
done < <(for ((lane = 1; lane <= LANES; ++lane)); do cat "$BUILD/lane$lane/results"; done | sort -t'|' -k2)
printf '%s\n' "${table[@]}" >"$BUILD/mutants.md"
echo "mutate: $((SECONDS / 60)) min $((SECONDS % 60)) s in all, the first builds included; table in $BUILD/mutants.md" >&2
summary="mutants: $killed killed, $survived survived"
[[ $invalid -eq 0 ]] || summary+=" ($invalid stale or invalid)"
echo "$summary"
[[ $survived -eq 0 && $invalid -eq 0 ]]
