"""Fixtures shared by the test modules."""
from __future__ import annotations

import sys

import pytest

from clipfit.training.cli import main


@pytest.fixture
def run_main(monkeypatch):
    """``train.py``'s ``main`` in this process, with stdout and the log file restored afterwards."""
    monkeypatch.setattr(sys, "stdout", sys.stdout)
    tees = []

    def run(argv):
        main(argv)
        tees.append(sys.stdout)  # setup_logger's tee to log.txt

    yield run
    for tee in tees:
        if tee is not sys.__stdout__ and hasattr(tee, "close"):
            tee.close()
