#!/usr/bin/env bash
# Compiles the given source files with -fsyntax-only, using the flags CMake
# recorded in build/compile_commands.json: a seconds-long check of an edit
# before queuing for a full build. Header edits: pass a .cpp that includes it.
#   ./scripts/syntax_check.sh src/records/records.cpp tests/core/records_test.cpp
set -euo pipefail
cd "$(dirname "$0")/.."
db="${CUSTOS_BUILD_DIR:-build}/compile_commands.json"
[[ -f "$db" ]] || { echo "syntax_check: $db missing; run ./scripts/build.sh once" >&2; exit 2; }
status=0
for f in "$@"; do
  abs="$(realpath "$f")"
  cmd="$(python3 - "$db" "$abs" <<'PY'
import json, shlex, sys
for e in json.load(open(sys.argv[1])):
    if e["file"] == sys.argv[2]:
        args = shlex.split(e["command"])
        out = []
        skip = False
        for a in args:
            if skip: skip = False; continue
            if a == "-o": skip = True; continue
            if a == "-c": continue
            out.append(a)
        print("cd " + shlex.quote(e["directory"]) + " && " + " ".join(map(shlex.quote, out)) + " -fsyntax-only")
        break
PY
)"
  if [[ -z "$cmd" ]]; then echo "syntax_check: $f is not in $db (new file? re-run cmake)" >&2; status=1; continue; fi
  if ! (eval "$cmd"); then status=1; fi
done
exit $status
