"""Train or evaluate a trainer: ``python train.py`` with CoOp's flags (see --help)."""
import sys

from clipfit.errors import InstallError, check_runtime_imports

if __name__ == "__main__":
    try:
        check_runtime_imports()  # torch, torchvision, clip: a failed import is an install problem
    except InstallError as err:
        print(f"ERROR: {err}", file=sys.stderr)
        sys.exit(2)
    from clipfit.training.cli import main

    main()
