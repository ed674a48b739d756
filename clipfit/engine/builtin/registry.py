"""Name -> class registries (Dassl's ``Registry``), with errors that list known names."""
from __future__ import annotations

import difflib
from typing import Any, Callable, Dict, List, Optional
from clipfit.errors import ConfigValueError, UnknownNameError


class Registry:
    """A mapping from names to classes or functions, filled by a decorator."""

    def __init__(self, name: str):
        self._name = name
        self._obj_map: Dict[str, Any] = {}

    def _do_register(self, name: str, obj: Any, force: bool = False) -> None:
        if name in self._obj_map and not force:
            raise KeyError(f'An object named "{name}" was already registered in "{self._name}" registry')
        self._obj_map[name] = obj

    def register(self, obj: Any = None, force: bool = False) -> Callable:
        """Register ``obj`` under its ``__name__``; usable as ``@register()`` or ``register(obj)``."""
        if obj is None:
            def wrapper(fn_or_class: Any) -> Any:
                self._do_register(fn_or_class.__name__, fn_or_class, force=force)
                return fn_or_class
            return wrapper
        self._do_register(obj.__name__, obj, force=force)
        return obj

    def get(self, name: str) -> Any:
        if name not in self._obj_map:
            known = self.registered_names()
            close = difflib.get_close_matches(name, known, n=1)
            hint = f' Did you mean "{close[0]}"?' if close else ""
            raise UnknownNameError(
                f'Unknown {self._name.lower()} name "{name}". Known names: {", ".join(sorted(known))}.{hint}'
            )
        return self._obj_map[name]

    def registered_names(self) -> List[str]:
        return list(self._obj_map.keys())

    def __contains__(self, name: str) -> bool:
        return name in self._obj_map


TRAINER_REGISTRY = Registry("TRAINER")
DATASET_REGISTRY = Registry("DATASET")
EVALUATOR_REGISTRY = Registry("EVALUATOR")


def _check_name(registry: Registry, name: Optional[str], key: str) -> str:
    if not name:
        raise ConfigValueError(f"{key} is empty: set it in a config file or on the command line")
    registry.get(name)  # raises with the known names
    return name


def build_trainer(cfg):
    """Instantiate the trainer named ``cfg.TRAINER.NAME``."""
    name = _check_name(TRAINER_REGISTRY, cfg.TRAINER.NAME, "TRAINER.NAME (--trainer)")
    if cfg.VERBOSE:
        print(f"Loading trainer: {name}")
    return TRAINER_REGISTRY.get(name)(cfg)


def build_dataset(cfg):
    """Instantiate the dataset named ``cfg.DATASET.NAME``."""
    name = _check_name(DATASET_REGISTRY, cfg.DATASET.NAME, "DATASET.NAME (--dataset-config-file)")
    if cfg.VERBOSE:
        print(f"Loading dataset: {name}")
    return DATASET_REGISTRY.get(name)(cfg)


def build_evaluator(cfg, **kwargs):
    """Instantiate the evaluator named ``cfg.TEST.EVALUATOR``."""
    name = _check_name(EVALUATOR_REGISTRY, cfg.TEST.EVALUATOR, "TEST.EVALUATOR")
    if cfg.VERBOSE:
        print(f"Loading evaluator: {name}")
    return EVALUATOR_REGISTRY.get(name)(cfg, **kwargs)
