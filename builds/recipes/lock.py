"""The Conda lock a recipe build printed into its log, between `>> CONDA_LOCK_START` and `<< CONDA_LOCK_END`.

A marker counts when it ends a line: the builder's step lines quote the markers in the middle of a line
(`STEP 3/5: RUN ... && echo ">> CONDA_LOCK_START" && ...`) and are never taken for them, while output that
lacked its last newline may precede a marker on the same line (that text before an end marker is the lock's
last line). Carriage returns (progress output) end lines too. The last complete block wins.
"""

from __future__ import annotations

import re

LOCK_START = ">> CONDA_LOCK_START"
LOCK_END = "<< CONDA_LOCK_END"
LINE_END = re.compile(r"\r\n|\r|\n")


def conda_lock_extract(log: str) -> str:
    """The explicit lock from a build log, one package a line with a final newline; "" when there is none."""
    lock = ""
    lines: list[str] | None = None
    for line in LINE_END.split(log):
        text = line.rstrip()
        if text.endswith(LOCK_START):
            lines = []
        elif lines is not None and text.endswith(LOCK_END):
            last = text[: -len(LOCK_END)]
            lock = "".join(f"{item}\n" for item in [*lines, *([last] if last.strip() else [])])
            lines = None
        elif lines is not None:
            lines.append(text)
    return lock
