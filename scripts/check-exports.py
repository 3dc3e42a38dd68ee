#!/usr/bin/env python3
"""check-exports.py LIB HEADER: the dynamic symbols LIB defines are exactly
the functions HEADER declares (the public cp_ API): every declared function
is exported, and nothing else is (no internal helper, no cp_ name the
header does not declare)."""
import re
import subprocess
import sys


def declared(path):
    text = open(path, encoding="utf-8").read()
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r"^\s*#.*$", "", text, flags=re.M)
    called = set(re.findall(r"\b(cp_\w+)\s*\(", text))
    # Type names that can stand before "(": a return type before a
    # function-pointer typedef, the typedef's own name.
    types = set(re.findall(r"\(\s*\*\s*(cp_\w+)\s*\)", text))
    types |= set(re.findall(r"\b(cp_\w+)\s*;", text))
    return called - types


def exported(lib):
    out = subprocess.run(["nm", "-D", "--defined-only", lib], check=True,
                         capture_output=True, text=True).stdout
    names = set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 3:
            names.add(parts[2].split("@")[0])
    return names


def main():
    lib, header = sys.argv[1], sys.argv[2]
    want = declared(header)
    have = exported(lib)
    missing = sorted(want - have)
    extra = sorted(have - want)
    print("%s: %d symbols exported, %d functions declared in %s"
          % (lib, len(have), len(want), header))
    for name in missing:
        print("MISSING (declared, not exported): " + name)
    for name in extra:
        print("EXTRA (exported, not declared): " + name)
    if not want:
        print("no cp_ functions found in the header")
        return 1
    return 1 if missing or extra else 0


if __name__ == "__main__":
    sys.exit(main())
