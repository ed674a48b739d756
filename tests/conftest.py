"""Fixtures shared by the test modules."""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

from clipfit.training.cli import main

SLURM_MARK = ("slurm: runs on a real one-node SLURM cluster (tests/slurm_cluster.py), minutes; only when "
              "selected with -m slurm (CI runs them so)")


def pytest_configure(config):
    config.addinivalue_line("markers", SLURM_MARK)


def pytest_collection_modifyitems(config, items):
    """The cluster tests run only when asked for (``-m slurm``): they take minutes."""
    if "slurm" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="a test on a real SLURM cluster: run it with -m slurm (CI does)")
    for item in items:
        if "slurm" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def run_main(monkeypatch):
    """``train.py``'s ``main`` in this process (it stops teeing stdout to the run's log when it
    returns; stdout is restored after the test in any case)."""
    monkeypatch.setattr(sys, "stdout", sys.stdout)
    return main


@pytest.fixture
def load_bench(monkeypatch):
    """``load_bench(name)``: the script ``bench/<name>.py`` loaded as a module."""
    bench_dir = Path(__file__).resolve().parents[1] / "bench"
    monkeypatch.syspath_prepend(str(bench_dir))  # the benches import their siblings (speed_modes)

    def load(name: str):
        spec = importlib.util.spec_from_file_location(f"bench_{name}", bench_dir / f"{name}.py")
        bench = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, spec.name, bench)  # its dataclasses look their module up there
        spec.loader.exec_module(bench)
        return bench
    return load


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A one-node SLURM cluster for the session (skipped where none can start); the client tools
    reach it through ``SLURM_CONF``, set for the session."""
    from slurm_cluster import SlurmCluster, why_not

    reason = why_not()
    if reason:
        pytest.skip(reason)
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    cluster.start()
    before = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)
    try:
        yield cluster
    finally:
        cluster.stop()
        if before is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = before
