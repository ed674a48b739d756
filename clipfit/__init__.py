"""CLIPFit: fine-tune CLIP's text FFN projection biases and image LayerNorms.

The package holds the method (parameter selection, losses, cached text features),
CLIP loading, and the engine bridge to Dassl (``clipfit.engine``).
"""

__version__ = "0.1.0"
