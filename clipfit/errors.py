"""Errors the user can fix, by type: the command lines show their message alone and exit 2.

Any exception of another type is a bug of this toolkit and ends with its traceback (exit 1),
even a ``ValueError`` raised on purpose. A mistake the user can fix (a config key or value, a
missing dataset or file, a damaged checkpoint, a busy run folder, a broken install) is raised
as a :class:`UserError`; the specific classes also derive from the built-in class callers may
already catch (``ValueError``, ``KeyError``, ``FileNotFoundError``, ...).

This module imports nothing of the project (standard library only), so every room may use it,
``clipfit/methods`` included (tests/test_layout.py allows exactly this shared module there).
"""
from __future__ import annotations

import importlib
from typing import Mapping

# What train.py needs to start, module -> its package; a failed import is an install problem.
# openai-clip is imported through the one module that imports it (and silences its warning).
RUNTIME_PACKAGES = {"torch": "torch", "torchvision": "torchvision", "clipfit.methods.openai_clip": "openai-clip"}
INSTALL_FIX = ("Install a matching torch and torchvision for this machine (the pinned pair of the README's "
               "install command; a CPU torch needs the CPU torchvision), then `pip install -e .` "
               "(openai-clip needs setuptools<81).")


class UserError(Exception):
    """A mistake the user can fix; its message says what is wrong and what to do."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else type(self).__name__


class ConfigValueError(UserError, ValueError):
    """A config key (or command-line flag) whose value cannot be used."""


class UnknownNameError(UserError, KeyError):
    """An unknown trainer, dataset or other registered name (the message lists the known ones)."""


class MissingFileError(UserError, FileNotFoundError):
    """A file or folder the user named, or their data lists, does not exist."""


class AlreadyExistsError(UserError, FileExistsError):
    """A file or folder that exists and must not be overwritten."""


class UnreadableFileError(UserError, OSError):
    """A file that exists but cannot be read (a broken image, say)."""


class InstallError(UserError, ImportError):
    """A package the toolkit needs does not import: an install problem, never one of the data."""


def check_runtime_imports(packages: Mapping[str, str] = RUNTIME_PACKAGES) -> None:
    """Import the modules of ``packages``; the first that fails raises :class:`InstallError` with the fix."""
    for module, name in packages.items():
        try:
            importlib.import_module(module)
        except Exception as err:  # ImportError, OSError (a shared library), RuntimeError (torchvision ops)
            raise InstallError(f"Importing {name} failed ({type(err).__name__}: {err}). This is an install "
                               f"problem, not one of your data or runs. {INSTALL_FIX}") from err
