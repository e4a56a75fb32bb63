#!/usr/bin/env bash
# Builds the Debian package from a build tree (cpack -G DEB) and checks that
# it installs the binaries, the policies, the systemd unit and the man pages,
# that dpkg-shlibdeps filled in the library dependencies, that the maintainer
# scripts are there, and that the unit's systemd-analyze exposure stays low.
#   tests/packaging/deb_test.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1
src=$2
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
fail=0
(cd "$build" && cpack -G DEB -B "$out" >"$out/cpack.log" 2>&1) || { cat "$out/cpack.log"; exit 1; }
deb=$(ls "$out"/custos_*.deb)
contents=$(dpkg-deb -c "$deb")
for f in usr/bin/custos usr/bin/custosd usr/bin/custos-audit \
         usr/share/custos/policies/roles.yaml usr/share/custos/policies/schema.yaml \
         usr/share/custos/policies/purposes.yaml usr/share/custos/policies/regulations.yaml \
         usr/lib/systemd/system/custosd.service \
         usr/share/man/man1/custos.1 usr/share/man/man1/custos-audit.1 usr/share/man/man8/custosd.8 \
         usr/share/doc/custos/operations.md; do
  if ! grep -qE "[[:space:]]\./$f\$" <<<"$contents"; then
    echo "FAIL: the package does not install /$f"
    fail=1
  fi
done
for f in usr/bin/custos usr/bin/custosd usr/bin/custos-audit; do
  grep -qE "^-rwxr-xr-x .* \./$f\$" <<<"$contents" || { echo "FAIL: /$f is not 0755"; fail=1; }
done
depends=$(dpkg-deb -f "$deb" Depends)
for lib in libsodium libsqlcipher libssl libpq5 adduser; do
  grep -q "$lib" <<<"$depends" || { echo "FAIL: Depends lacks $lib: $depends"; fail=1; }
done
control=$(dpkg-deb -I "$deb")
grep -q "postinst" <<<"$control" || { echo "FAIL: no postinst"; fail=1; }
# The packaged binaries run (their libraries resolve on this system).
mkdir "$out/root"
dpkg-deb -x "$deb" "$out/root"
"$out/root/usr/bin/custos" --help >/dev/null || { echo "FAIL: packaged custos does not run"; fail=1; }
"$out/root/usr/bin/custosd" --help >/dev/null || { echo "FAIL: packaged custosd does not run"; fail=1; }
# libpq is loaded by the PostgreSQL backend when it connects, never linked:
# an embedded vault's processes do not map it or what it pulls in.
for f in custos custosd; do
  ! ldd "$out/root/usr/bin/$f" | grep -q libpq || { echo "FAIL: /usr/bin/$f links libpq"; fail=1; }
done
man -l "$out/root/usr/share/man/man1/custos.1" >/dev/null 2>&1 || [ ! -x /usr/bin/man ] ||
  { echo "FAIL: custos.1 does not render"; fail=1; }
if command -v systemd-analyze >/dev/null; then
  unit="$src/packaging/systemd/custosd.service"
  score=$(systemd-analyze security --offline=true "$unit" 2>/dev/null | sed -n 's/.*Overall exposure level for custosd.service: \([0-9.]*\).*/\1/p')
  if [ -z "$score" ] || ! awk -v s="$score" 'BEGIN { exit !(s <= 2.0) }'; then
    echo "FAIL: systemd-analyze security exposure '$score' (want <= 2.0)"
    fail=1
  fi
  grep -q "overall exposure level $score OK" "$unit" || { echo "FAIL: the unit's comment does not state its score $score"; fail=1; }
fi
if [ "$fail" = 0 ]; then
  echo "1 passed, 0 failed"
else
  exit 1
fi
