#!/usr/bin/env bash
# Installs the Debian 12 packages Custos builds, tests and runs with.
# Idempotent: only missing packages are fetched.
set -euo pipefail
PACKAGES=(
  build-essential cmake pkg-config ccache git clang-14
  llvm-14    # llvm-symbolizer: sanitizer reports with file and line (scripts/sanitize.sh)
  libclang-rt-14-dev  # ASan, UBSan, TSan and libFuzzer runtimes (only recommended by clang-14)
  libsodium-dev libssl-dev libsqlcipher-dev sqlcipher sqlite3
  libcpprest-dev nlohmann-json3-dev libyaml-cpp-dev libcli11-dev libspdlog-dev
  libphonenumber-dev libhowardhinnant-date-dev tzdata
  googletest libgtest-dev libgmock-dev libbenchmark-dev
  libpq-dev postgresql
  wrk curl openssl python3
  chromium   # the console's browser tests (tests/browser, driven by playwright-core)
)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node.js and npm for the browser tests: any install will do (some images
# ship a newer Node.js than Debian's); Debian's when there is none.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then missing+=(nodejs npm); fi
if ((${#missing[@]})); then
  echo "custos: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
