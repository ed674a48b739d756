"""Dataset splits (CoOp's ``split_zhou_*.json``), few-shot caches, base/new classes, the base
classes of the loaders in ``datasets/``, the dataset doctor (``python -m clipfit.data doctor``) and
the downloader (``python -m clipfit.data prepare``).
"""
