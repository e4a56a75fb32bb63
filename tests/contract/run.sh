#!/usr/bin/env bash
# The contract run (ctest: contract_prism). Installs the pinned Stoplight
# Prism from package-lock.json (npm ci, Node.js from Debian), then runs the
# HTTP suites once more with every request going through
#   prism proxy docs/openapi.yaml <custosd>
# in front of each custosd the tests start (tests/http/http_support.cpp).
# Prism reports each disagreement in an sl-violations header; the harness
# fails the test on every response violation and on every request violation
# the server accepted, so CI fails on a violation in either direction.
# Usage: run.sh OPENAPI_YAML TEST_BINARY[:GTEST_FILTER]...
set -euo pipefail
doc=$(realpath "$1")
shift
cd "$(dirname "$0")"
want=$(node -p 'require("./package.json").devDependencies["@stoplight/prism-cli"]')
have=$(node -p 'try { require("./node_modules/@stoplight/prism-cli/package.json").version } catch { "" }')
if [ "$want" != "$have" ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
export CUSTOS_TEST_PRISM="$(pwd)/node_modules/.bin/prism" CUSTOS_TEST_OPENAPI="$doc"
rc=0
for spec in "$@"; do
  binary=${spec%%:*}
  filter='*'
  [ "$spec" != "$binary" ] && filter=${spec#*:}
  echo "contract: $(basename "$binary") --gtest_filter=$filter through prism $want"
  "$binary" --gtest_filter="$filter" --gtest_brief=1 || rc=1
done
exit "$rc"
