"""The Dassl side: the trainer base shared by ``trainers/``, the tuned-tensor checkpoint format,
the project's config keys, ``train.py``'s command line and gradient statistics.
"""
