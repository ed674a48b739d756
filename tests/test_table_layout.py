"""The text tables fit a terminal (about 100 columns): as they are, one row per method, or cut
into several tables; markdown, CSV and JSON keep the full width."""
from __future__ import annotations

import json

from clipfit.experiments.table_parts import (DASH, TERMINAL_WIDTH, Table, column_groups, fit_width,
                                             long_layout, render)

METHODS = ["ZeroshotCLIP", "CoOp", "KgCoOp", "CLIPFit", "CLIPFit (paper)"]


def _base2new() -> Table:
    header = ["Dataset"] + [f"{m} {c}" for m in METHODS for c in ("Base", "New", "HM")]
    rows = [[d] + [f"{50 + i + j:.2f} ± 1.00" for j in range(len(header) - 1)]
            for i, d in enumerate(["DTD", "EuroSAT", "Average"])]
    return Table("base2new", [16], header, rows, notes=["A note " * 30])


def _width(text: str) -> int:
    return max(len(line) for line in text.splitlines())


def test_a_wide_base2new_table_gets_one_row_per_method_and_keeps_every_number():
    table = _base2new()
    text = render([table], "table")
    assert _width(text) <= TERMINAL_WIDTH
    lines = text.splitlines()
    assert lines[3].split() == ["Dataset", "Method", "Base", "New", "HM"]
    header, rows = long_layout(table.header, table.rows)
    assert len(rows) == 3 * len(METHODS)
    for r, row in enumerate(table.rows):  # every cell lands under its method and metric
        for m, method in enumerate(METHODS):
            out = rows[r * len(METHODS) + m]
            assert out[:2] == [row[0] if m == 0 else "", method]
            assert out[2:] == row[1 + 3 * m: 4 + 3 * m]
    assert "A note" in text and all(len(line) <= TERMINAL_WIDTH for line in lines)


def test_markdown_csv_and_json_keep_the_full_width():
    table = _base2new()
    markdown = render([table], "markdown")
    header = next(line for line in markdown.splitlines() if line.startswith("| Dataset"))
    assert "CLIPFit (paper) HM" in header and _width(markdown) > TERMINAL_WIDTH
    assert json.loads(render([table], "json"))[0]["header"] == table.header


def test_groups_with_different_columns_are_aligned_by_name():
    header = ["Dataset", "A 1-shot", "A 2-shot", "A (paper) 2-shot"]
    groups = column_groups(header)
    assert groups == [("A", [1, 2]), ("A (paper)", [3])]
    new_header, rows = long_layout(header, [["DTD", "1", "2", "3"]])
    assert new_header == ["Dataset", "Method", "1-shot", "2-shot"]
    assert rows == [["DTD", "A", "1", "2"], ["", "A (paper)", DASH, "3"]]


def test_one_column_per_dataset_is_cut_into_tables_that_repeat_the_first_column():
    header = ["Method"] + [f"Dataset{i}" for i in range(12)] + ["Average"]
    rows = [[m] + [f"{60 + i:.2f} ± 0.50" for i in range(13)] for m in ("CoOp", "CLIPFit")]
    assert column_groups(header) is None and long_layout(header, rows) is None
    text = fit_width(header, rows)
    assert _width(text) <= TERMINAL_WIDTH
    parts = text.split("\n\n")
    assert len(parts) > 1 and all(p.splitlines()[0].startswith("Method") for p in parts)
    shown = [name for p in parts for name in p.splitlines()[0].split()[1:]]
    assert shown == header[1:]  # every column once, in order


def test_a_narrow_table_is_left_as_it_is():
    header, rows = ["Dataset", "CLIPFit Base", "CLIPFit New", "CLIPFit HM"], [["DTD", "1", "2", "3"]]
    assert fit_width(header, rows).splitlines()[0].split() == ["Dataset", "CLIPFit", "Base", "CLIPFit",
                                                               "New", "CLIPFit", "HM"]
