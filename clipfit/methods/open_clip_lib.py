"""The ``open_clip_torch`` package (imported as ``open_clip``): the only module that imports it.

It is an optional extra (``pip install "clipfit[open_clip]"``): :func:`require` returns the
package, or raises :class:`OpenCLIPMissingError` naming the install command. Everything
else takes open_clip's names from here, so a run on OpenAI's CLIP never imports it.
"""
from __future__ import annotations

import contextlib
import importlib
import logging
from types import ModuleType

from clipfit.errors import InstallError

INSTALL = 'pip install "clipfit[open_clip]"'  # the extra pins open_clip_torch (see setup.py)


class OpenCLIPMissingError(InstallError):
    """``MODEL.BACKBONE.NAME open_clip:...`` without open_clip installed."""


def available() -> bool:
    """Whether ``import open_clip`` works."""
    try:
        require()
    except OpenCLIPMissingError:
        return False
    return True


def require() -> ModuleType:
    """The ``open_clip`` package."""
    try:
        import open_clip
    except ImportError as err:
        raise OpenCLIPMissingError(
            f"MODEL.BACKBONE.NAME names an open_clip backbone, but open_clip is not installed ({err}). "
            f"Install the optional extra: {INSTALL}"
        ) from err
    return open_clip


def submodule(name: str) -> ModuleType:
    """``open_clip.<name>`` (e.g. ``pretrained``, ``factory``, ``model``, ``transformer``)."""
    require()
    return importlib.import_module(f"open_clip.{name}")


@contextlib.contextmanager
def quiet():
    """open_clip's root-logger warnings (e.g. "initialized randomly" while we load weights ourselves) off."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)
