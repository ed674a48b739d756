"""Fixtures shared by the test modules."""
from __future__ import annotations

import sys

import pytest

from clipfit.training.cli import main


@pytest.fixture
def run_main(monkeypatch):
    """``train.py``'s ``main`` in this process (it stops teeing stdout to the run's log when it
    returns; stdout is restored after the test in any case)."""
    monkeypatch.setattr(sys, "stdout", sys.stdout)
    return main
