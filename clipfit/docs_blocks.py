"""Generated blocks in the Markdown docs: figures that change are written by the command that
measures them.

A page marks each generated block with a pair of HTML comments (invisible on GitHub)::

    <!-- begin: suite -->
    ... written by python -m clipfit.testing suite-stats ...
    <!-- end: suite -->

:func:`write_block` replaces what lies between the markers (the markers stay) and
:func:`measured_line` says when, where and with which command a figure was measured, so a
page never shows a hand-copied number without its provenance.
"""
from __future__ import annotations

import datetime
import os
import platform
import re
from typing import Optional

from clipfit.fileio import read_text, write_text

_NAME = re.compile(r"[A-Za-z0-9_.-]+")


class BlockError(ValueError):
    """A page lacks the markers of a block, holds them twice, or in the wrong order."""


def _markers(name: str) -> tuple:
    if not _NAME.fullmatch(name):
        raise BlockError(f"Block name {name!r}: use letters, digits, '.', '_' or '-'.")
    return f"<!-- begin: {name} -->", f"<!-- end: {name} -->"


def _span(text: str, name: str, path: str) -> tuple:
    """(start, end) of the block's content in ``text``: after the begin marker's line, up to
    the end marker."""
    begin, end = _markers(name)
    counts = (text.count(begin), text.count(end))
    if counts != (1, 1):
        raise BlockError(
            f"{path}: block '{name}' needs exactly one '{begin}' and one '{end}' line, found "
            f"{counts[0]} and {counts[1]}. Add the two lines where the block belongs.")
    start, stop = text.index(begin) + len(begin), text.index(end)
    if stop < start:
        raise BlockError(f"{path}: '{end}' comes before '{begin}'.")
    return start, stop


def read_block(path: str, name: str) -> str:
    """The content of block ``name`` in the Markdown file ``path`` (without the markers)."""
    text = read_text(path, "Markdown page")
    start, stop = _span(text, name, path)
    return text[start:stop].strip("\n")


def write_block(path: str, name: str, content: str) -> bool:
    """Replace the content of block ``name`` in ``path`` with ``content`` (atomically; the
    rest of the page is untouched). Returns whether the page changed."""
    text = read_text(path, "Markdown page")
    start, stop = _span(text, name, path)
    new = text[:start] + "\n" + content.strip("\n") + "\n" + text[stop:]
    if new == text:
        return False
    write_text(path, new)
    return True


def machine_description() -> str:
    """This machine in a few words: CPU count, processor and operating system."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cpus} CPU cores ({platform.machine()}, {platform.system()}), Python {platform.python_version()}"


def measured_line(command: str, device: Optional[str] = None,
                  when: Optional[datetime.date] = None) -> str:
    """'Measured on DATE on MACHINE [, DEVICE] with `COMMAND`.' for the line under a figure."""
    day = (when or datetime.date.today()).isoformat()
    where = machine_description() + (f", {device}" if device else "")
    return f"Measured on {day} on {where} with `{command}`."
