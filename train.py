"""Train or evaluate a trainer: ``python train.py`` with CoOp's flags (see --help)."""
from clipfit.training.cli import main

if __name__ == "__main__":
    main()
