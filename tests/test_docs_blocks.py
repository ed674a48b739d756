"""Generated blocks in the docs (clipfit/docs_blocks.py) and the suite-stats command that writes one."""
from __future__ import annotations

import datetime
import subprocess
import sys
from pathlib import Path

import pytest

from clipfit.docs_blocks import BlockError, measured_line, read_block, write_block

REPO = Path(__file__).resolve().parents[1]
PAGE = """# Page

Text before.

<!-- begin: speed -->
old figure
<!-- end: speed -->

Text after.
"""


def test_write_block_replaces_only_the_block_and_keeps_the_markers(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(PAGE)
    assert write_block(str(page), "speed", "| a | b |\n|---|---|\n| 1 | 2 |\n")
    text = page.read_text()
    assert text == PAGE.replace("old figure", "| a | b |\n|---|---|\n| 1 | 2 |")
    assert read_block(str(page), "speed") == "| a | b |\n|---|---|\n| 1 | 2 |"
    assert not write_block(str(page), "speed", "| a | b |\n|---|---|\n| 1 | 2 |")  # unchanged
    assert page.read_text() == text


@pytest.mark.parametrize("text, found", [
    ("# no markers\n", "found 0 and 0"),
    (PAGE + "<!-- begin: speed -->\n", "found 2 and 1"),
    ("<!-- end: speed -->\nx\n<!-- begin: speed -->\n", "comes before"),
])
def test_a_page_without_one_clean_block_is_refused_and_left_alone(tmp_path, text, found):
    page = tmp_path / "page.md"
    page.write_text(text)
    with pytest.raises(BlockError, match=found):
        write_block(str(page), "speed", "new")
    assert page.read_text() == text


def test_block_names_are_plain_words(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(PAGE)
    with pytest.raises(BlockError, match="Block name"):
        write_block(str(page), "a -->", "x")


def test_measured_line_names_the_date_the_machine_and_the_command():
    line = measured_line("python bench/x.py --k 5", device="NVIDIA H100",
                         when=datetime.date(2026, 1, 2))
    assert line.startswith("Measured on 2026-01-02 on ")
    assert "CPU cores" in line and "NVIDIA H100" in line and line.endswith("with `python bench/x.py --k 5`.")


def _suite(tmp_path: Path, body: str) -> Path:
    tests = tmp_path / "suite"
    tests.mkdir()
    (tests / "test_small.py").write_text(body)
    return tests


def _stats(tests: Path, page: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "clipfit.testing", "suite-stats", str(tests),
                           "--page", str(page)], cwd=REPO, capture_output=True, text=True)


def test_suite_stats_writes_pytests_count_into_the_page(tmp_path):
    tests = _suite(tmp_path, "import pytest\n\ndef test_a():\n    pass\n\ndef test_b():\n    pass\n\n"
                             "@pytest.mark.skip\ndef test_c():\n    pass\n")
    page = tmp_path / "benchmarks.md"
    page.write_text(PAGE.replace("speed", "suite"))
    proc = _stats(tests, page)
    assert proc.returncode == 0, proc.stderr
    block = read_block(str(page), "suite")
    assert f"`python -m pytest -q {tests}`: 2 passed, 1 skipped in " in block
    assert f"Measured on {datetime.date.today().isoformat()}" in block
    assert "Text after." in page.read_text()


def test_suite_stats_writes_nothing_when_a_test_fails(tmp_path):
    tests = _suite(tmp_path, "def test_a():\n    assert False\n")
    page = tmp_path / "benchmarks.md"
    page.write_text(PAGE.replace("speed", "suite"))
    proc = _stats(tests, page)
    assert proc.returncode == 1
    assert "Not written" in proc.stderr and "1 failed" in proc.stderr
    assert page.read_text() == PAGE.replace("speed", "suite")
