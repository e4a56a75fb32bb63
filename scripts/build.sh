#!/usr/bin/env bash
# Configures and builds Custos into ./build (Release with debug info), with
# ccache, -Werror (CUSTOS_WERROR=ON) and as many jobs as cores. Extra
# arguments go to CMake (e.g. -DCMAKE_BUILD_TYPE=Release, -DCUSTOS_WERROR=OFF).
#   CUSTOS_BUILD_DIR   build directory (default build)
#   CUSTOS_TARGETS     space-separated targets to build (default: all)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${CUSTOS_BUILD_DIR:-build}
export CCACHE_DIR=${CCACHE_DIR:-$HOME/.cache/ccache}
# One cache for every checkout (a CI clone hits what the working tree
# compiled): paths under the checkout are hashed relative to it, and debug
# info's working directory is not hashed. Several build configurations
# (GCC, clang ASan, TSan, coverage, fuzz) need more than ccache's default 5 GB.
export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$(pwd -P)}
export CCACHE_NOHASHDIR=${CCACHE_NOHASHDIR:-true}
export CCACHE_MAXSIZE=${CCACHE_MAXSIZE:-20G}

# A build directory configured for another checkout (this one was moved or
# copied) makes CMake refuse: "the current CMakeCache.txt directory ... is
# different". Its objects are worthless here anyway; start it afresh
# (ccache keeps the rebuild cheap).
if [ -f "$BUILD_DIR/CMakeCache.txt" ]; then
  cached_src=$(sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$BUILD_DIR/CMakeCache.txt")
  cached_bin=$(sed -n 's/^CMAKE_CACHEFILE_DIR:INTERNAL=//p' "$BUILD_DIR/CMakeCache.txt")
  # Compare real paths: a checkout reached through a symlink is not "moved".
  real() { (cd "$1" 2>/dev/null && pwd -P) || echo "missing:$1"; }
  here_src=$(pwd -P)
  here_bin=$(real "$BUILD_DIR")
  if [ "$(real "$cached_src")" != "$here_src" ] || [ "$(real "$cached_bin")" != "$here_bin" ]; then
    echo "custos: $BUILD_DIR was configured for $cached_src; reconfiguring it for $here_src" >&2
    rm -rf "$BUILD_DIR"
  fi
fi

cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCUSTOS_WERROR=ON "$@" >/dev/null
if [ -n "${CUSTOS_TARGETS:-}" ]; then
  # shellcheck disable=SC2086
  cmake --build "$BUILD_DIR" -j"$(nproc)" --target $CUSTOS_TARGETS
else
  cmake --build "$BUILD_DIR" -j"$(nproc)"
fi
