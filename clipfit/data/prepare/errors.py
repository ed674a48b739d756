"""What every step of ``prepare`` shares: its errors, and the disk-space check."""

from __future__ import annotations

import os
import shutil

from clipfit.errors import UserError


class PrepareError(UserError):
    """A step failed; the message says what to do."""


class ManualStep(PrepareError):
    """A file that must be fetched by hand (licence or login)."""


class DamagedFile(PrepareError):
    """A fetched file that is not what it should be (truncated archive, a web page instead of JSON, ...)."""


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def check_free(folder: str, needed: int, what: str) -> None:
    """Raise when the filesystem of ``folder`` has less than ``needed`` bytes free."""
    probe = folder
    while not os.path.isdir(probe):
        probe = os.path.dirname(probe)
    free = shutil.disk_usage(probe).free
    if needed > free:
        raise PrepareError(
            f"Not enough disk space for {what} in {folder}: {human(needed)} ({needed:,} bytes) needed, "
            f"{human(free)} free. Free some space (or link the dataset folder to a larger disk) and run again."
        )
