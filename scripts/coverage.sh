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
gcovr --root . --filter 'src/' --filter 'audit/src/' --exclude-unreachable-branches --exclude-throw-branches \
  --object-directory build-cov --json-summary build-cov/coverage/summary.json \
  --html-details build-cov/coverage/index.html build-cov >/dev/null
# The security and compliance modules, then the product as a whole.
python3 - build-cov/coverage/summary.json <<'PY'
import json, sys
files = json.load(open(sys.argv[1]))["files"]
modules = ["src/crypto", "src/access", "src/consent", "src/records", "src/dsr", "src/breach",
           "src/retention", "src/audit", "audit/src", "src/store", "src/service", "src/http", "src/cli"]
def row(name, chosen):
    lt = sum(f["line_total"] for f in chosen); lc = sum(f["line_covered"] for f in chosen)
    bt = sum(f["branch_total"] for f in chosen); bc = sum(f["branch_covered"] for f in chosen)
    pct = lambda c, t: 100.0 * c / t if t else 100.0
    print(f"{name:<16} lines {pct(lc, lt):5.1f}% ({lc}/{lt})   branches {pct(bc, bt):5.1f}% ({bc}/{bt})")
for m in modules:
    row(m, [f for f in files if f["filename"].startswith(m + "/")])
security = modules[:9]
row("security+compliance", [f for f in files if any(f["filename"].startswith(m + "/") for m in security)])
row("everything", files)
PY
echo "coverage: report in build-cov/coverage/index.html"
