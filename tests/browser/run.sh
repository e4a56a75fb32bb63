#!/usr/bin/env bash
# Runs the console's browser tests (ctest: browser_console). Installs the
# pinned playwright-core from package-lock.json (npm ci; no browser download:
# it drives Debian's chromium), then runs node's test runner.
# Env: CUSTOS_CLI, CUSTOSD (the built binaries), CHROMIUM, SCREENSHOT_DIR.
set -euo pipefail
cd "$(dirname "$0")"
: "${CHROMIUM:=/usr/bin/chromium}"
if [ ! -x "$CHROMIUM" ]; then
  echo "browser tests: $CHROMIUM not found; ./scripts/deps.sh installs Debian's chromium" >&2
  exit 1
fi
export CHROMIUM
want=$(node -p 'require("./package.json").devDependencies["playwright-core"]')
have=$(node -p 'try { require("./node_modules/playwright-core/package.json").version } catch { "" }')
if [ "$want" != "$have" ]; then
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error
fi
exec node --test --test-concurrency=1 --test-timeout=120000 verify.test.mjs console.test.mjs
