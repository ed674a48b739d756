"""CSV output of the analysis commands (written atomically)."""
from __future__ import annotations

import csv
from dataclasses import astuple, fields
from typing import Iterable, Sequence

from clipfit.fileio import atomic_path


def write_csv(path: str, header: Sequence[str], rows: Iterable[Sequence]) -> str:
    """``header`` then ``rows``, through a temporary file; returns ``path``."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_rows_csv(rows: Sequence, path: str) -> str:
    """Dataclass instances as CSV, one column per field."""
    return write_csv(path, [f.name for f in fields(rows[0])], (astuple(r) for r in rows))
