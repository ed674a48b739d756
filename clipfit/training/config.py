"""Project config keys layered on top of Dassl's defaults (CoOp's ``extend_cfg``).

Every option a user may change lives here with its default; trainers read keys,
never literals.
"""
from __future__ import annotations

import difflib
import os
import os.path as osp
import re
from contextlib import contextmanager
from typing import Any, Iterable, Iterator, List, Optional, Sequence

import yaml
from yacs.config import CfgNode as CN

from clipfit import REPO_ROOT
from clipfit.fileio import FileContentError, read_text
from clipfit.methods.options import NODE_OPTIONS, PROGRAD_TEMPLATE_INIT, defaults_node
from clipfit.errors import ConfigValueError, UserError

ALLOW_PY_ENV = "CLIPFIT_ALLOW_PY_CONFIG"  # "1" lets yacs execute a .py config file
# Config folders named as in another repository -> where this one keeps them. The CLIPFit
# authors' configs/trainers/ClipFit/ differs from our configs/trainers/CLIPFit/ only by case,
# and two names (vit_b16, vit_b16_ep10) are in both with other epochs: on a case-insensitive
# file system (macOS, Windows) the two folders are one and one file of each pair would be lost.
FOREIGN_CONFIG_FOLDERS = {"configs/trainers/ClipFit": "configs/authors/ClipFit"}
# Keys that another repository's files set to a boolean where ours hold a phrase -> per trainer
# ("" for any other), the phrase True stands for and whose code reads it so. KgCoOp's train.py
# defaults TRAINER.COOP.CTX_INIT to False, its configs set True, and its prompt learner then starts
# from "a photo of a"; ProGrad's code reads True as its dataset prompt ("template" here).
BOOLEAN_PHRASES = {
    "TRAINER.COOP.CTX_INIT": {"": ("a photo of a", "KgCoOp"), "ProGrad": (PROGRAD_TEMPLATE_INIT, "ProGrad")},
}


# The keys of a TRAINER.<NODE> that belong to its trainer, not to the method's options
TRAINER_NODE_KEYS = {
    "COOP": {
        "PREC": "fp16",  # fp16, amp, bf16, fp32 (CoOp, KgCoOp, ProGrad, zero-shot CLIP, the authors' ClipFit)
        # The CLIPFit authors' train.py adds these and their scripts set them; nothing reads them
        # (their trainer neither): accepted so their command lines run, logged as without effect.
        "W1": 1.0,
        "W2": 1.0,
    },
    "COCOOP": {"PREC": "fp16"},
    "CLIP_ADAPTER": {"PREC": "fp16"},
    "MAPLE": {"PREC": "fp16"},
    "TIP_ADAPTER": {"PREC": "fp16"},
    "CLIPFIT": {
        "PREC": "fp16",  # fp16, amp, bf16, fp32
        "LOG_GRAD_STATS": False,  # record per-layer gradient statistics
    },
}


def project_keys() -> CN:
    """This project's keys and CoOp's (so CoOp-style opts are accepted), with defaults."""
    cfg = CN()
    cfg.DATASET = CN()
    cfg.MODEL = CN()
    cfg.MODEL.BACKBONE = CN()
    cfg.TRAINER = CN()
    cfg.DATASET.SUBSAMPLE_CLASSES = "all"  # all, base or new
    # prompt template with "{}" for every trainer that uses one; empty: the trainer's
    # reference template for the dataset (clipfit.methods.templates)
    cfg.DATASET.TEMPLATE = ""
    # Generic image-folder / CSV dataset (DATASET.NAME "ImageFolder" or "CSVDataset")
    cfg.DATASET.CSV_FILE = ""
    cfg.DATASET.IMAGE_DIR = ""

    cfg.MODEL.BACKBONE.PATH = ""  # local CLIP weights: JIT archive or OpenAI state dict
    # refuse a checkpoint tuned from other pre-trained weights (fingerprint in its meta)
    cfg.MODEL.CHECK_WEIGHTS_FINGERPRINT = True

    cfg.DETERMINISTIC = False  # deterministic algorithms, fixed worker seeds

    # torch.compile of the encoders, for every trainer (clipfit.training.precision)
    cfg.TRAIN = CN()
    cfg.TRAIN.COMPILE = False
    cfg.TRAIN.COMPILE_BACKEND = "inductor"  # torch.compile backend
    cfg.TRAIN.COMPILE_MODE = ""  # torch.compile mode ("", "reduce-overhead", "max-autotune", ...)

    cfg.TRAINER.UPDATE_IMAGE_LN = False  # "+UL": also tune the image LayerNorms

    for node, classes in NODE_OPTIONS.items():  # each method's keys and defaults (clipfit.methods.options)
        cfg.TRAINER[node] = CN({k: v for cls in classes for k, v in defaults_node(cls).items()})
        cfg.TRAINER[node].update(TRAINER_NODE_KEYS.get(node, {}))
    return cfg


def _add_missing(cfg: CN, extra: CN) -> None:
    for k, v in extra.items():
        if k not in cfg:
            cfg[k] = v
        elif isinstance(v, CN) and isinstance(cfg[k], CN):
            _add_missing(cfg[k], v)


def extend_cfg(cfg: CN) -> CN:
    """Add the keys of :func:`project_keys` that ``cfg`` lacks.

    Keys already present are kept, so calling this from a CoOp or KgCoOp ``train.py``
    (after their own ``extend_cfg``) leaves their defaults untouched.
    """
    _add_missing(cfg, project_keys())
    return cfg


def cfg_value(cfg: CN, dotted_key: str) -> Any:
    """The value of a dotted config key such as ``"TRAINER.CLIPFIT.PREC"``."""
    node = cfg
    for part in dotted_key.split("."):
        node = node[part]
    return node


def flat_keys(cfg: CN, prefix: str = "") -> List[str]:
    """All leaf keys of ``cfg`` as dotted names."""
    keys: List[str] = []
    for k, v in cfg.items():
        name = f"{prefix}{k}"
        if isinstance(v, CN):
            keys.extend(flat_keys(v, name + "."))
        else:
            keys.append(name)
    return keys


def closest_key(key: str, known: Iterable[str]) -> str:
    """The known key most similar to ``key`` (empty when nothing is close)."""
    known = list(known)
    match = difflib.get_close_matches(key, known, n=1, cutoff=0.5)
    if not match:  # compare the last component too: DATASET.NUM_SHOT -> DATASET.NUM_SHOTS
        tails = {k.split(".")[-1]: k for k in known}
        m = difflib.get_close_matches(key.split(".")[-1], list(tails), n=1, cutoff=0.6)
        match = [tails[m[0]]] if m else []
    return match[0] if match else ""


class ConfigKeyError(UserError, KeyError):
    """A config key that does not exist, with the closest known key."""

    def __init__(self, key: str, source: str, suggestion: str):
        hint = f" Did you mean {suggestion}?" if suggestion else ""
        super().__init__(f"Unknown config key {key} (in {source}).{hint}")
        self.key, self.source, self.suggestion = key, source, suggestion

    def __str__(self) -> str:
        return self.args[0]


def _unknown_keys(cfg: CN, other: CN, prefix: str = "") -> List[str]:
    missing = []
    for k, v in other.items():
        name = f"{prefix}{k}"
        if k not in cfg:
            missing.append(name)
        elif isinstance(v, CN) and isinstance(cfg[k], CN):
            missing.extend(_unknown_keys(cfg[k], v, name + "."))
    return missing


def config_file_path(path: str) -> str:
    """Where this repository keeps the config file ``path``: a path into one of
    :data:`FOREIGN_CONFIG_FOLDERS` of this repository (compared case-sensitively, before the file
    system, which may not) is moved to its folder here; any other path is returned unchanged."""
    folder, name = osp.split(osp.abspath(path))
    for theirs, ours in FOREIGN_CONFIG_FOLDERS.items():
        if folder == osp.join(REPO_ROOT, theirs):
            return osp.join(REPO_ROOT, ours, name)
    return path


def load_cfg_file(cfg: CN, path: str) -> CN:
    """The config file ``path`` parsed as YAML, with errors naming the file and the line.

    yacs would execute a ``.py`` config file; that is refused unless ``CLIPFIT_ALLOW_PY_CONFIG=1``.
    """
    if path.endswith(".py"):
        if os.environ.get(ALLOW_PY_ENV) != "1":
            raise FileContentError(
                f"Config file {path} is Python code, which yacs would execute. Config files are YAML: "
                f"write it as a .yaml file, or set {ALLOW_PY_ENV}=1 to run it (only for code you trust)."
            )
        with open(path, "r") as f:
            return cfg.load_cfg(f)
    text = read_text(path, "Config file", "write it again as YAML text")
    try:
        data = yaml.safe_load(text)  # what yacs does for YAML, with the file named in errors
    except yaml.YAMLError as e:
        where = str(e).replace('"<unicode string>"', path)
        raise FileContentError(f"Config file {path} is not valid YAML:\n{where}\nFix the YAML syntax there.") from e
    if not isinstance(data, (dict, type(None))):
        raise FileContentError(f"Config file {path} should hold YAML keys (KEY: value), not a {type(data).__name__}.")
    return type(cfg)(data or {})


def _boolean_phrase(key: str, value: Any, source: str, trainer: str, notes: Optional[List[str]]) -> Any:
    """``value``, or for a key of :data:`BOOLEAN_PHRASES` given as a boolean, the phrase True
    stands for with ``trainer`` (True) or "" (False), said in ``notes``."""
    if key not in BOOLEAN_PHRASES or not isinstance(value, bool):
        return value
    meanings = BOOLEAN_PHRASES[key]
    phrase, owner = meanings.get(trainer, meanings[""])
    meant = phrase if value else ""
    if notes is not None:
        notes.append(f"{key} {value} (in {source}) read as {meant!r}, as {owner}'s code reads it")
    return meant


_INTEGER = re.compile(r"[+-]?\d+")
_TYPE_MISMATCH = re.compile(r"Type mismatch \(<class '(\w+)'> vs\. <class '(\w+)'>\) with values \((.*) vs\. (.*)\) "
                            r"for config key: (\S+)")


@contextmanager
def _typed_values(source: str) -> Iterator[None]:
    """yacs's type mismatch as a :class:`ConfigValueError` that names the key, both types and the fix."""
    try:
        yield
    except ValueError as e:
        m = _TYPE_MISMATCH.search(str(e))
        if not m:
            raise
        want, got, default, given = m.group(1), m.group(2), m.group(3), m.group(4)
        raise ConfigValueError(f"{m.group(5)} in {source} is {given} (type {got}), but the key takes values of "
                               f"type {want} (default {default}); give one of type {want}.") from e


def merge_from_file(cfg: CN, path: str, notes: Optional[List[str]] = None, trainer: str = "") -> None:
    """``cfg.merge_from_file`` (of :func:`config_file_path`) with errors naming the file, the
    unknown key and its closest match; booleans of :data:`BOOLEAN_PHRASES` become their phrase
    for ``trainer`` (empty: the file's ``TRAINER.NAME``, else ``cfg``'s)."""
    path = config_file_path(path)
    other = load_cfg_file(cfg, path)
    missing = _unknown_keys(cfg, other)
    if missing:
        raise ConfigKeyError(missing[0], path, closest_key(missing[0], flat_keys(cfg)))
    for key in BOOLEAN_PHRASES:
        *parents, leaf = key.split(".")
        node = other
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict) and leaf in node:
            named = trainer or (other.get("TRAINER") or {}).get("NAME") or cfg.TRAINER.NAME
            node[leaf] = _boolean_phrase(key, node[leaf], path, named, notes)
    with _typed_values(path):
        cfg.merge_from_other_cfg(other)


def merge_from_list(cfg: CN, opts: Sequence[str], notes: Optional[List[str]] = None) -> None:
    """``cfg.merge_from_list`` with an error naming the unknown key and its closest match;
    booleans of :data:`BOOLEAN_PHRASES` become their phrase for the trainer named, and an integer
    given for a float key is that float."""
    if len(opts) % 2:
        raise ConfigValueError(
            f"Config opts must come in KEY VALUE pairs, got {len(opts)} items: {list(opts)}"
        )
    known = set(flat_keys(cfg))
    opts = list(opts)
    for i in range(0, len(opts), 2):
        if opts[i] not in known:
            raise ConfigKeyError(opts[i], "command-line opts", closest_key(opts[i], known))
        if opts[i] in BOOLEAN_PHRASES and opts[i + 1] in ("True", "False"):
            trainer = dict(zip(opts[0::2], opts[1::2])).get("TRAINER.NAME", cfg.TRAINER.NAME)
            opts[i + 1] = repr(_boolean_phrase(opts[i], opts[i + 1] == "True", "command-line opts", trainer, notes))
        elif isinstance(cfg_value(cfg, opts[i]), float) and _INTEGER.fullmatch(opts[i + 1]):
            opts[i + 1] += ".0"  # BETA 16 means 16.0 (yacs would refuse the int)
    with _typed_values("command-line opts"):
        cfg.merge_from_list(opts)


def get_cfg() -> CN:
    """Dassl's defaults (from the active engine) plus this project's keys."""
    from clipfit.engine import get_cfg_default

    return extend_cfg(get_cfg_default())
