"""Experiments: the paper's protocol, the sweep runner, reading run folders, results tables and
the paper's reported numbers (``clipfit.experiments.paper``).
"""
