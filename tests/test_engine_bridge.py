"""CLIPFIT_ENGINE selects the engine; asking for Dassl without Dassl is a clear error."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _import_engine(value: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, CLIPFIT_ENGINE=value, PYTHONPATH=ROOT)
    code = "import clipfit.engine as e; print('ENGINE', e.ENGINE)"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)


def test_builtin_forced():
    r = _import_engine("builtin")
    assert r.returncode == 0 and "ENGINE builtin" in r.stdout


def test_dassl_requested_but_missing():
    try:
        import dassl  # noqa: F401
        pytest.skip("Dassl is installed here")
    except ImportError:
        pass
    r = _import_engine("dassl")
    assert r.returncode != 0
    assert "CLIPFIT_ENGINE=dassl but Dassl cannot be imported" in r.stderr
    assert "unset CLIPFIT_ENGINE" in r.stderr


def test_bad_value():
    r = _import_engine("tensorflow")
    assert r.returncode != 0 and "CLIPFIT_ENGINE must be" in r.stderr
