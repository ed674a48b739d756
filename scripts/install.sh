#!/usr/bin/env bash
# Install this project into the active Python environment (a virtual environment is best):
#   bash scripts/install.sh          # torch for this machine, then the project (editable)
#   bash scripts/install.sh --test   # the same, with the test tools (pytest)
# torch and torchvision: the pair of requirements/torch.txt, the CUDA build where an NVIDIA GPU
# is present and the CPU build elsewhere (scripts/install_torch.py; CLIPFIT_TORCH_INDEX=cpu,
# pypi or an index URL chooses). The pair file is passed to pip as constraints, so installing the
# project keeps that pair. PYTHON picks the interpreter (default: python, else python3).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON="${PYTHON:-$(command -v python || command -v python3)}"
case "${1:-}" in
    "") extras= ;;
    --test) extras="[test]" ;;
    *) echo "usage: bash scripts/install.sh [--test]" >&2; exit 2 ;;
esac
"$PYTHON" scripts/install_torch.py
"$PYTHON" -m pip install -c requirements/torch.txt -e ".$extras"
