"""Every relative link and anchor in README.md and docs/*.md resolves (GitHub's rules)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))

_FENCE = re.compile(r"^\s*(```|~~~)")
_CODE = re.compile(r"`+[^`]*`+")
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_HTML_ID = re.compile(r"<a\s+(?:name|id)=\"([^\"]+)\"")


def prose_lines(text: str) -> Iterator[Tuple[int, str]]:
    """(line number, line) outside fenced code blocks."""
    fenced = False
    for number, line in enumerate(text.splitlines(), 1):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield number, line


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: its rendered text, lowercase, punctuation other than
    '-' and '_' dropped, spaces to '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link shows its text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "")
    text = re.sub(r"(\*\*|__|\*)", "", text)
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(text: str) -> Set[str]:
    """Every anchor of a page: its headings' slugs (a repeated one gets -1, -2, ...) and the
    names of its HTML anchors."""
    seen: Dict[str, int] = {}
    found: Set[str] = set()
    for _, line in prose_lines(text):
        match = _HEADING.match(line)
        if match:
            base = slug(match.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
        found.update(_HTML_ID.findall(line))
    return found


def links(text: str) -> Iterator[Tuple[int, str]]:
    """(line number, target) of every Markdown link outside code."""
    for number, line in prose_lines(text):
        for match in _LINK.finditer(_CODE.sub("", line)):
            yield number, match.group(1)


def broken_links(page: Path, root: Path = ROOT) -> List[str]:
    """The relative links and anchors of ``page`` (under ``root``) that do not resolve."""
    problems = []
    for number, target in links(page.read_text()):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / unquote(path)).resolve() if path else page
        where = f"{page.relative_to(root)}:{number}: {target}"
        if not dest.exists():
            problems.append(f"{where}: no file {dest}")
        elif anchor and dest.suffix == ".md" and unquote(anchor) not in anchors(dest.read_text()):
            problems.append(f"{where}: no heading with anchor #{anchor} in {dest.name}")
    return problems


@pytest.mark.parametrize("heading, expected", [
    ("The paper's numbers (`clipfit.experiments.paper`) and `--compare-paper`",
     "the-papers-numbers-clipfitexperimentspaper-and---compare-paper"),
    ("`TRAINER.CLIPFIT` keys", "trainerclipfit-keys"),
    ("Baselines: CoOp, KgCoOp, CLIP-Adapter, +UL", "baselines-coop-kgcoop-clip-adapter-ul"),
    ("train.py and `CLIP_Adapter`", "trainpy-and-clip_adapter"),
    ("**Bold** and [a link](x.md)", "bold-and-a-link"),
])
def test_slug_follows_githubs_rules(heading, expected):
    assert slug(heading) == expected


def test_repeated_headings_get_numbered_anchors_and_code_is_not_a_heading():
    text = "# Setup\n## Setup\n```\n# Setup\n```\n### Setup\n"
    assert anchors(text) == {"setup", "setup-1", "setup-2"}


def test_the_checker_finds_dead_files_and_anchors(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# Title\n## Two words\n")
    page = tmp_path / "README.md"
    page.write_text("[ok](docs/a.md#two-words) [self](#readme) `[code](nowhere.md)`\n"
                    "[gone](docs/b.md) [bad](docs/a.md#three) [web](https://example.org/x#y)\n"
                    "# README\n```\n[in code](nowhere.md)\n```\n")
    problems = broken_links(page, tmp_path)
    assert len(problems) == 2, problems
    assert "README.md:2: docs/b.md: no file" in problems[0]
    assert "no heading with anchor #three in a.md" in problems[1]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(page):
    problems = broken_links(page)
    assert not problems, "\n".join(problems)
