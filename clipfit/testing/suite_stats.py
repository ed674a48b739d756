"""``python -m clipfit.testing suite-stats``: run the test suite and write its count and wall
time into the docs page that shows them (a generated block, :mod:`clipfit.docs_blocks`)."""
from __future__ import annotations

import re
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import List, Sequence

from clipfit.docs_blocks import measured_line, write_block

BLOCK = "suite"  # the block's name in the page
# pytest's last line, e.g. "556 passed, 1 skipped in 456.12s (0:07:36)"
_SUMMARY = re.compile(r"^=*\s*(?P<counts>\d+ \w+(?:, \d+ \w+)*) in [\d.]+s")


@dataclass
class SuiteResult:
    """What one run of the suite gave: pytest's counts, its exit status and the wall time."""

    counts: str
    returncode: int
    seconds: float

    @property
    def duration(self) -> str:
        minutes, seconds = divmod(round(self.seconds), 60)
        return f"{minutes} min {seconds} s" if minutes else f"{seconds} s"


def run_suite(paths: Sequence[str]) -> SuiteResult:
    """Run ``python -m pytest -q PATHS`` here, its output on this terminal."""
    command = [sys.executable, "-m", "pytest", "-q", *paths]
    start = time.monotonic()
    proc = subprocess.run(command, stdout=subprocess.PIPE, text=True)
    seconds = time.monotonic() - start
    sys.stdout.write(proc.stdout)
    lines = [line for line in proc.stdout.splitlines() if _SUMMARY.match(line)]
    if not lines:
        raise RuntimeError("pytest printed no summary line ('N passed ... in Xs'); see its output above.")
    return SuiteResult(_SUMMARY.match(lines[-1]).group("counts"), proc.returncode, seconds)


def suite_block(result: SuiteResult, paths: Sequence[str]) -> str:
    """The Markdown the page shows: the counts, the wall time and where they were measured."""
    command = "python -m pytest -q " + " ".join(paths)
    return (f"`{command}`: {result.counts} in {result.duration} (wall time).  \n"
            + measured_line(f"python -m clipfit.testing suite-stats --page PAGE {' '.join(paths)}"))


def main(paths: List[str], page: str) -> int:
    """Run the suite; write its block into ``page`` only when every test passed."""
    result = run_suite(paths)
    if result.returncode != 0:
        print(f"Not written to {page}: the suite did not pass ({result.counts}).", file=sys.stderr)
        return 1
    write_block(page, BLOCK, suite_block(result, paths))
    print(f"{page}: block '{BLOCK}' updated ({result.counts}, {result.duration}).")
    return 0
