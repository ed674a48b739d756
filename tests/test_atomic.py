"""Every writer goes through clipfit.fileio: a failed write leaves neither a partial file nor a temp."""
from __future__ import annotations

import json
import os

import pytest

from clipfit.fileio import atomic_path, write_json, write_text


def test_write_text_and_json_create_folders_and_leave_no_temp(tmp_path):
    out = tmp_path / "a" / "b"
    write_text(str(out / "x.txt"), "hello\n")
    write_json(str(out / "x.json"), {"k": 1}, indent=2)
    assert (out / "x.txt").read_text() == "hello\n"
    assert json.loads((out / "x.json").read_text()) == {"k": 1}
    assert sorted(os.listdir(out)) == ["x.json", "x.txt"]


def test_interrupted_write_keeps_the_old_file_and_removes_the_temp(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(str(path)) as tmp:
            with open(tmp, "w") as f:
                f.write("half")
            raise KeyboardInterrupt
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["metrics.json"]
