"""CLIPFit: fine-tune CLIP's text FFN projection biases and image LayerNorms.

The library, by concern (see the README's "How the code is organised"):

- ``clipfit.methods``: CLIPFit and the baselines on a plain ``clip.model.CLIP`` (no Dassl);
- ``clipfit.training``: the Dassl-side trainer base, checkpoints, config keys, ``train.py``'s CLI;
- ``clipfit.engine``: the Dassl bridge (real Dassl, or the built-in engine);
- ``clipfit.data``: split files, few-shot caches, loader base classes, the doctor;
- ``clipfit.experiments``: protocol, sweep runner, results tables, the paper's numbers;
- ``clipfit.analysis``: parameter-change, gradient, t-SNE and importance analyses;
- ``clipfit.testing``: tiny CLIPs and fabricated datasets for tests and demos.
"""
import os

__version__ = "0.1.0"

# The checkout holding trainers/, datasets/, configs/ and scripts/ next to this package.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
