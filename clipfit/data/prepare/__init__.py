"""Download datasets and lay them out as CoOp's loaders read them (``python -m clipfit.data prepare``).

Modules: ``sources`` (where each file comes from and goes), ``download`` (fetching, resuming,
checksums), ``archives`` (safe listing and extraction), ``layout`` (the per-file steps),
``imagenet`` (ImageNet's steps), ``cli`` (the command).
"""
