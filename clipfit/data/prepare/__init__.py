"""Download datasets and lay them out as CoOp's loaders read them (``python -m clipfit.data prepare``).

Modules: ``sources`` (where each file goes; its addresses and checksums are the data of
``sources.json``), ``download`` (fetching in address order, resuming, checksums), ``archives``
(safe listing and extraction), ``layout`` (the per-file steps), ``imagenet`` (ImageNet's steps),
``errors`` (the errors and the disk-space check they share), ``cli`` (the command).
"""
