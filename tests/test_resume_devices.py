"""Resuming with another number of GPUs than at save time, or on the CPU (simulated devices)."""
from __future__ import annotations

import random

import pytest
import torch

from clipfit.engine.builtin import checkpoint as C


class _FakeCuda:
    """``torch.cuda``'s generator API over ``n`` simulated devices (records what is set)."""

    def __init__(self, n: int):
        self.n, self.set = n, {}

    def install(self, monkeypatch):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: self.n > 0)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: self.n)
        monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [torch.full((8,), i, dtype=torch.uint8) for i in range(self.n)])

        def set_state(state, device):
            if not 0 <= device < self.n:  # what the real call does for a missing device
                raise RuntimeError(f"invalid device ordinal {device}")
            self.set[device] = state.clone()

        monkeypatch.setattr(torch.cuda, "set_rng_state", set_state)
        monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: [set_state(s, i) for i, s in enumerate(states)])


@pytest.mark.parametrize("saved_devices, resumed_devices", [(4, 1), (4, 0), (1, 4), (2, 2)])
def test_rng_state_of_n_devices_restores_on_m(monkeypatch, capsys, saved_devices, resumed_devices):
    _FakeCuda(saved_devices).install(monkeypatch)
    random.seed(3)
    torch.manual_seed(3)
    state = C.capture_rng_state()
    assert len(state["cuda"]) == saved_devices
    expected_cpu = torch.rand(3)
    fake = _FakeCuda(resumed_devices)
    fake.install(monkeypatch)
    torch.manual_seed(99)
    C.restore_rng_state(state)
    assert torch.equal(torch.rand(3), expected_cpu)  # the CPU generator resumes exactly
    kept = min(saved_devices, resumed_devices)
    assert sorted(fake.set) == list(range(kept))
    assert all(torch.equal(fake.set[i], state["cuda"][i]) for i in range(kept))
    note = capsys.readouterr().out
    assert ("Note: the checkpoint holds CUDA generator states" in note) == (saved_devices != resumed_devices)
