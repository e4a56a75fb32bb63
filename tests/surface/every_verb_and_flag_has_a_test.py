#!/usr/bin/env python3
"""Every `custos` verb and every `custosd` flag is driven by some test.

Lists the verbs from `custos --help` (recursively, to the leaves) and the
flags from `custosd --help`, then looks for each in the test sources: a verb
as its words in an argument vector ("dsr", "get") or a command line (dsr get),
or through a helper named after its group (cli_outbox({"list"); a flag as
"--flag". A new verb or flag without a test fails here, naming it.

usage: every_verb_and_flag_has_a_test.py CUSTOS CUSTOSD TESTS_DIR
"""
import os
import subprocess
import sys


def help_text(argv):
    return subprocess.run(argv + ["--help"], capture_output=True, text=True, timeout=10,
                          stdin=subprocess.DEVNULL).stdout


def verbs(custos, path=()):
    text = help_text([custos, *path])
    if "Subcommands:" not in text:
        return [list(path)]
    out = []
    for line in text.split("Subcommands:", 1)[1].splitlines():
        words = line.split()
        if line.startswith("  ") and words and not words[0].startswith("-"):
            out += verbs(custos, (*path, words[0]))
    return out


def flags(custosd):
    out = []
    for line in help_text([custosd]).splitlines():
        words = line.split()
        if not line.startswith("  ") or not words:
            continue
        for name in words[0].split(","):  # "-h,--help", "--listen"
            if name.startswith("--") and name != "--help" and name not in out:
                out.append(name)
    return out


def sources(tests_dir, me):
    text = []
    for root, dirs, files in os.walk(tests_dir):
        dirs[:] = [d for d in dirs if d != "node_modules"]
        for f in files:
            path = os.path.join(root, f)
            if f.endswith((".cpp", ".h", ".sh", ".js", ".py")) and os.path.abspath(path) != me:
                with open(path, errors="ignore") as fh:
                    text.append(fh.read())
    return "\n".join(text)


def main():
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    custos, custosd, tests_dir = sys.argv[1:]
    src = sources(tests_dir, os.path.abspath(__file__))
    missing = []
    all_verbs = verbs(custos)
    for v in all_verbs:
        forms = ['"' + '", "'.join(v) + '"', " ".join(v)]
        if len(v) >= 2:
            forms.append("cli_%s({\"%s\"" % (v[-2], v[-1]))
        if not any(f in src for f in forms):
            missing.append("custos " + " ".join(v))
    all_flags = [f for f in flags(custosd)]
    for f in all_flags:
        if '"%s"' % f not in src:
            missing.append("custosd " + f)
    print("%d custos verbs, %d custosd flags" % (len(all_verbs), len(all_flags)))
    for m in missing:
        print("no test drives: " + m)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
