"""The toy world: drawn images and captions, a tiny CLIP pretrained on them and shipped here,
and few-shot datasets in CoOp's layout (``python -m clipfit.toyworld --help``)."""
