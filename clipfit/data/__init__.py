"""Dataset splits (CoOp's ``split_zhou_*.json``), few-shot caches, base/new classes, the base
classes of the loaders in ``datasets/``, and the dataset doctor (``python -m clipfit.data doctor``).
"""
