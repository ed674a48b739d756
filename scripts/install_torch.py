"""Install the torch / torchvision pair of requirements/torch.txt, built for this machine.

    python scripts/install_torch.py [--dry-run]

Standard library only: it runs before anything is installed. The build:
- a pair already installed at the pinned versions is kept (a CPU build is replaced on a
  machine with an NVIDIA GPU);
- an NVIDIA GPU (``nvidia-smi -L`` lists one), or a system other than Linux: the default index
  (PyPI; its Linux wheels are CUDA builds, its macOS and Windows wheels CPU builds);
- Linux without a GPU: PyTorch's CPU wheel index (no CUDA libraries, about 3 GB less), or the
  default index with a note when the CPU index cannot be reached.
``CLIPFIT_TORCH_INDEX`` overrides the choice: ``cpu``, ``pypi`` or an index URL.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Callable, Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
PIN_FILE = ROOT / "requirements" / "torch.txt"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
INDEX_ENV = "CLIPFIT_TORCH_INDEX"
PACKAGES = ("torch", "torchvision")


class PinError(ValueError):
    """requirements/torch.txt does not pin exactly one version of torch and of torchvision."""


def read_pins(path: Path = PIN_FILE) -> Dict[str, str]:
    """``{"torch": "2.14.1", "torchvision": "0.29.1"}`` from ``name==version`` lines."""
    pins: Dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep or name.strip() not in PACKAGES or name.strip() in pins or not version.strip():
            raise PinError(f"{path}:{number}: {raw.strip()!r}: the file holds one 'torch==X' and "
                           "one 'torchvision==Y' line (a matching pair), nothing else.")
        pins[name.strip()] = version.strip()
    if set(pins) != set(PACKAGES):
        raise PinError(f"{path}: pins {sorted(pins)}; it needs both torch and torchvision.")
    return pins


def has_nvidia_gpu() -> bool:
    """Whether ``nvidia-smi -L`` lists a GPU."""
    if shutil.which("nvidia-smi") is None:
        return False
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "GPU" in out.stdout


def installed_versions() -> Dict[str, Optional[str]]:
    """The installed version of torch and torchvision (None when absent)."""
    found: Dict[str, Optional[str]] = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def index_reachable(url: str, timeout: float = 5.0) -> bool:
    """Whether ``url`` answers within ``timeout`` seconds."""
    try:
        with urllib.request.urlopen(url + "/torch/", timeout=timeout):
            return True
    except Exception:  # no network, DNS, proxy, HTTP errors: all mean "not usable"
        return False


@dataclass
class Plan:
    """What to do: ``install`` from ``index`` (None: pip's default index) or ``keep``."""

    action: str
    index: Optional[str]
    reason: str


def choose(pins: Dict[str, str], installed: Dict[str, Optional[str]], gpu: bool, system: str,
           override: str = "", reachable: Callable[[str], bool] = index_reachable) -> Plan:
    """The install plan for this machine (see the module's docstring)."""
    pair = " and ".join(f"{n} {pins[n]}" for n in PACKAGES)
    local = {n: (v.split("+", 1) + [""])[1] if v else "" for n, v in installed.items()}
    same = all(v is not None and v.split("+", 1)[0] == pins[n] for n, v in installed.items())
    if same and not override and not (gpu and local["torch"] == "cpu"):
        return Plan("keep", None, f"{pair} already installed ({installed['torch']}); kept.")
    if override:
        index = {"cpu": CPU_INDEX, "pypi": None}.get(override.lower(), override)
        return Plan("install", index, f"{pair} from {index or 'the default index'} "
                                      f"({INDEX_ENV}={override}).")
    if gpu:
        return Plan("install", None, f"{pair}, CUDA build (an NVIDIA GPU is present), from the default index.")
    if system != "Linux":
        return Plan("install", None, f"{pair} from the default index (its {system} wheels are CPU builds).")
    if reachable(CPU_INDEX):
        return Plan("install", CPU_INDEX, f"{pair}, CPU build (no NVIDIA GPU found), from {CPU_INDEX}.")
    return Plan("install", None,
                f"{pair} from the default index: no NVIDIA GPU found, but the CPU wheel index "
                f"{CPU_INDEX} cannot be reached. On Linux the default build carries CUDA "
                f"(about 3 GB more); {INDEX_ENV}=cpu insists on the CPU index.")


def pip_command(plan: Plan, pins: Dict[str, str], python: str = sys.executable) -> List[str]:
    """The pip command that carries out ``plan`` (an install)."""
    command = [python, "-m", "pip", "install"] + [f"{n}=={pins[n]}" for n in PACKAGES]
    return command + (["--index-url", plan.index] if plan.index else [])


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="print the plan, install nothing")
    args = parser.parse_args(argv)
    try:
        pins = read_pins()
    except (OSError, PinError) as err:
        print(f"ERROR: {err}", file=sys.stderr)
        return 2
    plan = choose(pins, installed_versions(), has_nvidia_gpu(), platform.system(),
                  os.environ.get(INDEX_ENV, "").strip())
    print(f"torch: {plan.reason}")
    if plan.action == "keep":
        return 0
    command = pip_command(plan, pins)
    print("+ " + " ".join(command))
    return 0 if args.dry_run else subprocess.call(command)


if __name__ == "__main__":
    sys.exit(main())
