#!/usr/bin/env python3
"""Re-point the crate docs' source line-range links after code moved.

`tests/docs.rs` fails when a link like `backend/uring/mod.rs.html#607-677` no longer spans the
function it names, and its message gives the function's current lines. This script runs that
test, applies the lines it reports, and repeats until the links are right.
"""
import re
import subprocess
import sys

PATTERN = re.compile(
    r"(src/[\w/.]+): the link to ([\w:]+) points at (src/[\w/.]+) lines (\d+)-(\d+), "
    r"but there `fn \w+` spans lines \[\((\d+), (\d+)\)"
)

for _ in range(100):
    run = subprocess.run(["cargo", "test", "-q", "--test", "docs"], capture_output=True, text=True)
    m = PATTERN.search(run.stdout + run.stderr)
    if not m:
        sys.exit(run.returncode)
    doc, name, target, a, b, c, d = m.groups()
    page = target.removeprefix("src/").replace(".rs", ".rs.html")
    text = open(doc).read()
    old, new = f"{page}#{a}-{b}", f"{page}#{c}-{d}"
    if old not in text:
        sys.exit(f"{doc}: cannot find {old}")
    open(doc, "w").write(text.replace(old, new))
    print(f"{name}: {old} -> {new}")
sys.exit("gave up after 100 links")
