"""Atomic file writes: readers see no file or a complete one, never half of one.

Every file the project writes (checkpoints, configs, metrics, splits, caches, plots, CSVs)
goes through :func:`atomic_path`, so an interrupted run never leaves a partial file behind.
"""
from __future__ import annotations

import contextlib
import json
import os
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yield a hidden temporary path next to ``path``; on success rename it onto ``path``,
    on any error remove it. Parent folders are created."""
    folder, name = os.path.split(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{name}.{os.getpid()}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def write_text(path: str, text: str) -> str:
    """Write ``text`` to ``path`` atomically; returns ``path``."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write(text)
    return path


def write_json(path: str, obj: Any, **dump_kwargs: Any) -> str:
    """Write ``obj`` as JSON atomically (flushed to disk first); returns ``path``."""
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(obj, f, **dump_kwargs)
            f.flush()
            os.fsync(f.fileno())
    return path
