#!/usr/bin/env bash
# Line and branch coverage of the whole suite (against SQLCipher), with GCC's
# gcov and gcovr (Debian), into build-cov. Prints one line per module of the
# security and compliance code and the product as a whole, and writes an
# HTML report to build-cov/coverage/index.html.
#   scripts/coverage.sh [ctest args...]   (default: every test but packaging)
# Not part of scripts/test.sh: an -O0 instrumented build and run take about
# twenty minutes on two cores; the figures are recorded in docs/testing.md.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/deps.sh
if ! command -v gcovr >/dev/null; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends gcovr
fi
CUSTOS_BUILD_DIR=build-cov ./scripts/build.sh -DCUSTOS_COVERAGE=ON -DCUSTOS_BUILD_BENCHMARKS=OFF -DCUSTOS_WERROR=OFF \
  -DCMAKE_BUILD_TYPE=Debug
find build-cov -name '*.gcda' -delete
if [ "$#" -eq 0 ]; then set -- -E '^packaging\.'; fi
ctest --test-dir build-cov -j2 --timeout 1200 "$@" || echo "coverage: some tests failed; coverage is of the run as it went" >&2
mkdir -p build-cov/coverage
# ccache (CCACHE_BASEDIR, scripts/build.sh) records source paths relative to
# each object's build directory, which gcovr cannot resolve from one root:
# gcov runs from each directory that compiled objects (the core library and
# CLI, custosd's HTTP layer, the audit format library), each into a JSON
# tracefile. Counters updated from several threads at once can come out
# negative in gcov's output; gcovr 5.2 cannot parse those lines, so they are
# skipped (--gcov-ignore-parse-errors) and the figures are a slight undercount.
tracefiles=()
for dir in src src/http audit; do
  out="$(pwd)/build-cov/coverage/$(echo "$dir" | tr / _).json"
  (cd "build-cov/$dir" && gcovr --root "$OLDPWD" --filter "$OLDPWD/src/" --filter "$OLDPWD/audit/src/" \
    --exclude-unreachable-branches --exclude-throw-branches --gcov-ignore-parse-errors --object-directory . \
    --json "$out" . >/dev/null 2>&1) || echo "coverage: gcovr failed in build-cov/$dir" >&2
  tracefiles+=(--add-tracefile "$out")
done
gcovr --root . "${tracefiles[@]}" --html-details build-cov/coverage/index.html >/dev/null 2>&1 || true
# The security and compliance modules, then the product as a whole.
python3 - build-cov/coverage/src.json build-cov/coverage/src_http.json build-cov/coverage/audit.json <<'PY'
import json, sys
files = {}
for path in sys.argv[1:]:
    for f in json.load(open(path))["files"]:
        files.setdefault(f["file"], f)  # a header seen from two directories counts once
modules = ["src/crypto", "src/access", "src/consent", "src/records", "src/dsr", "src/breach",
           "src/retention", "src/audit", "audit/src", "src/store", "src/service", "src/http", "src/cli",
           "src/outbox", "src/util"]
def row(name, chosen):
    lt = lc = bt = bc = 0
    for f in chosen:
        for line in f["lines"]:
            if line.get("gcovr/noncode"):
                continue
            lt += 1
            lc += line["count"] > 0
            for b in line.get("branches", []):
                bt += 1
                bc += b["count"] > 0
    pct = lambda c, t: 100.0 * c / t if t else 100.0
    print(f"{name:<20} lines {pct(lc, lt):5.1f}% ({lc}/{lt})   branches {pct(bc, bt):5.1f}% ({bc}/{bt})")
for m in modules:
    row(m, [f for n, f in files.items() if n.startswith(m + "/")])
security = modules[:9]
row("security+compliance", [f for n, f in files.items() if any(n.startswith(m + "/") for m in security)])
row("everything", files.values())
PY
echo "coverage: report in build-cov/coverage/index.html"
