"""The install command: which torch build scripts/install_torch.py picks (no network needed),
the one pin file, and .ci/run ending with the README's test command."""
from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("install_torch", ROOT / "scripts" / "install_torch.py")
install_torch = importlib.util.module_from_spec(_spec)
sys.modules["install_torch"] = install_torch  # dataclasses look their module up
_spec.loader.exec_module(install_torch)

PINS = {"torch": "2.14.1", "torchvision": "0.29.1"}
NONE = {"torch": None, "torchvision": None}


def _never(url):
    raise AssertionError(f"asked the network for {url}")


def test_gpu_machine_gets_the_default_cuda_build_without_asking_the_network():
    plan = install_torch.choose(PINS, NONE, gpu=True, system="Linux", reachable=_never)
    assert (plan.action, plan.index) == ("install", None) and "CUDA" in plan.reason
    assert install_torch.pip_command(plan, PINS, "py") == [
        "py", "-m", "pip", "install", "torch==2.14.1", "torchvision==0.29.1"]


def test_linux_without_gpu_gets_the_cpu_index_when_it_answers():
    asked = []
    plan = install_torch.choose(PINS, NONE, gpu=False, system="Linux",
                                reachable=lambda url: asked.append(url) or True)
    assert asked == [install_torch.CPU_INDEX]
    assert plan.index == install_torch.CPU_INDEX
    assert install_torch.pip_command(plan, PINS, "py")[-2:] == ["--index-url", install_torch.CPU_INDEX]


def test_unreachable_cpu_index_falls_back_to_the_default_index_and_says_what_it_costs():
    plan = install_torch.choose(PINS, NONE, gpu=False, system="Linux", reachable=lambda url: False)
    assert (plan.action, plan.index) == ("install", None)
    assert "cannot be reached" in plan.reason and "CLIPFIT_TORCH_INDEX=cpu" in plan.reason


def test_macos_takes_the_default_index_whose_wheels_are_cpu_builds():
    plan = install_torch.choose(PINS, NONE, gpu=False, system="Darwin", reachable=_never)
    assert plan.index is None and "Darwin wheels are CPU builds" in plan.reason


def test_the_pinned_pair_already_installed_is_kept_unless_it_is_a_cpu_build_on_a_gpu_machine():
    same = {"torch": "2.14.1", "torchvision": "0.29.1"}
    assert install_torch.choose(PINS, same, gpu=False, system="Linux", reachable=_never).action == "keep"
    cpu_build = {"torch": "2.14.1+cpu", "torchvision": "0.29.1+cpu"}
    assert install_torch.choose(PINS, cpu_build, gpu=False, system="Linux", reachable=_never).action == "keep"
    assert install_torch.choose(PINS, cpu_build, gpu=True, system="Linux", reachable=_never).action == "install"
    other = {"torch": "2.14.1", "torchvision": "0.28.0"}  # a mismatched pair is replaced
    assert install_torch.choose(PINS, other, gpu=True, system="Linux", reachable=_never).action == "install"


@pytest.mark.parametrize("value, index", [("cpu", install_torch.CPU_INDEX), ("pypi", None),
                                          ("https://example.org/whl/cu121", "https://example.org/whl/cu121")])
def test_the_environment_variable_overrides_the_choice(value, index):
    plan = install_torch.choose(PINS, {"torch": "2.14.1", "torchvision": "0.29.1"}, gpu=False,
                                system="Linux", override=value, reachable=_never)
    assert (plan.action, plan.index) == ("install", index)


def test_the_pin_file_holds_one_matching_pair(tmp_path):
    assert set(install_torch.read_pins()) == {"torch", "torchvision"}
    bad = tmp_path / "torch.txt"
    for text in ("torch==2.1\n", "torch>=2.1\ntorchvision==0.16\n", "torch==2.1\ntorch==2.2\ntorchvision==0.16\n",
                 "torch==2.1\ntorchvision==0.16\nnumpy==1\n"):
        bad.write_text(text)
        with pytest.raises(install_torch.PinError):
            install_torch.read_pins(bad)


def test_the_pair_is_written_in_one_place_only():
    pinned = re.compile(r"torch(vision)?==\d")
    for path in [ROOT / "README.md", ROOT / "setup.py", ROOT / ".ci" / "run",
                 ROOT / "scripts" / "install.sh"] + sorted((ROOT / "docs").glob("*.md")):
        assert not pinned.search(path.read_text()), f"{path} writes a torch version: use requirements/torch.txt"


def _readme_commands():
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", text, re.S).group(1)
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


def test_ci_ends_with_the_readmes_test_command_and_the_readme_starts_with_install_and_demo():
    install_demo, tests = _readme_commands()[:2]
    assert install_demo == "bash scripts/install.sh && bash scripts/demo.sh"
    assert tests == ("bash scripts/install.sh --test && python -m pytest -q -m slurm tests"
                     " && python -m pytest -q tests")  # the cluster group, then the suite
    lines = [ln for ln in (ROOT / ".ci" / "run").read_text().splitlines() if ln.strip()]
    assert lines[-1] == tests


def test_dry_run_prints_the_plan_and_installs_nothing():
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "install_torch.py"), "--dry-run"],
                          capture_output=True, text=True, env={"PATH": "/usr/bin:/bin",
                                                               "CLIPFIT_TORCH_INDEX": "cpu"})
    assert proc.returncode == 0, proc.stderr
    assert "--index-url https://download.pytorch.org/whl/cpu" in proc.stdout
