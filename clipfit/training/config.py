"""Project config keys layered on top of Dassl's defaults (CoOp's ``extend_cfg``).

Every option a user may change lives here with its default; trainers read keys,
never literals.
"""
from __future__ import annotations

import difflib
import os
from typing import Any, Iterable, List, Sequence

import yaml
from yacs.config import CfgNode as CN

from clipfit.fileio import FileContentError, read_text

ALLOW_PY_ENV = "CLIPFIT_ALLOW_PY_CONFIG"  # "1" lets yacs execute a .py config file


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

    cfg.TRAINER.COOP = CN()
    cfg.TRAINER.COOP.N_CTX = 16  # number of context vectors
    cfg.TRAINER.COOP.CSC = False  # class-specific context
    cfg.TRAINER.COOP.CTX_INIT = ""  # initialisation phrase, e.g. "a photo of a"
    cfg.TRAINER.COOP.PREC = "fp16"  # fp16, amp, bf16, fp32
    cfg.TRAINER.COOP.CLASS_TOKEN_POSITION = "end"  # end, middle, front
    cfg.TRAINER.COOP.W = 8.0  # KgCoOp: weight of the knowledge-guided term
    cfg.TRAINER.COOP.KG_DISTANCE = "cosine"  # KgCoOp: cosine (its code) or euclidean (its paper)
    # The CLIPFit authors' train.py adds these and their scripts set them; nothing reads them
    # (their trainer neither): accepted so their command lines run, logged as without effect.
    cfg.TRAINER.COOP.W1 = 1.0
    cfg.TRAINER.COOP.W2 = 1.0

    cfg.TRAINER.COCOOP = CN()
    cfg.TRAINER.COCOOP.N_CTX = 16
    cfg.TRAINER.COCOOP.CTX_INIT = ""
    cfg.TRAINER.COCOOP.PREC = "fp16"
    cfg.TRAINER.COCOOP.TEXT_BATCH_SIZE = 1000  # most prompts per text-encoder pass (same result)

    cfg.TRAINER.CLIP_ADAPTER = CN()
    cfg.TRAINER.CLIP_ADAPTER.REDUCTION = 4  # bottleneck reduction factor
    cfg.TRAINER.CLIP_ADAPTER.RATIO = 0.2  # residual ratio of adapted features
    cfg.TRAINER.CLIP_ADAPTER.PREC = "fp16"

    cfg.TRAINER.MAPLE = CN()
    cfg.TRAINER.MAPLE.N_CTX = 2  # learned prompt tokens per layer
    cfg.TRAINER.MAPLE.CTX_INIT = "a photo of a"  # its first N_CTX tokens start the context
    cfg.TRAINER.MAPLE.PROMPT_DEPTH = 9  # layers with prompts (1: shallow)
    cfg.TRAINER.MAPLE.PREC = "fp16"

    cfg.TRAINER.PROGRAD = CN()  # ProGrad; its prompt uses TRAINER.COOP.*
    cfg.TRAINER.PROGRAD.LAMBDA = 1.0  # share of the conflicting gradient part removed
    cfg.TRAINER.PROGRAD.T = 1.0  # temperature of the zero-shot teacher's distillation term

    cfg.TRAINER.TIP_ADAPTER = CN()  # TipAdapter and TipAdapterF
    cfg.TRAINER.TIP_ADAPTER.INIT_ALPHA = 1.0  # residual weight of the cache logits
    cfg.TRAINER.TIP_ADAPTER.INIT_BETA = 1.0  # sharpness of the cache affinities
    cfg.TRAINER.TIP_ADAPTER.SEARCH = True  # search alpha and beta on the validation set
    cfg.TRAINER.TIP_ADAPTER.SEARCH_SCALE = [7.0, 3.0]  # [beta, alpha] upper ends of the grid
    cfg.TRAINER.TIP_ADAPTER.SEARCH_STEP = [200, 20]  # [beta, alpha] grid sizes
    cfg.TRAINER.TIP_ADAPTER.AUGMENT_EPOCH = 10  # augmented views averaged per cache key
    cfg.TRAINER.TIP_ADAPTER.CLIP_SCALE = 100.0  # scale of the zero-shot logits (its code: 100)
    cfg.TRAINER.TIP_ADAPTER.ADAMW_EPS = 1e-4  # Tip-Adapter-F's AdamW epsilon
    cfg.TRAINER.TIP_ADAPTER.PREC = "fp16"

    cfg.TRAINER.CLIPFIT = CN()
    cfg.TRAINER.CLIPFIT.BETA = 8.0  # weight of the regulariser
    cfg.TRAINER.CLIPFIT.REG = "kd"  # kd, mse, none
    cfg.TRAINER.CLIPFIT.TEXT_PARAMS = "proj_bias"  # proj_bias, ffn_bias, all_bias, none
    cfg.TRAINER.CLIPFIT.IMAGE_PARAMS = "layernorm"  # layernorm, bias, none
    cfg.TRAINER.CLIPFIT.TEXT_LAYERS = []  # block indices to tune; empty: all
    cfg.TRAINER.CLIPFIT.IMAGE_LAYERS = []  # block indices to tune; empty: all
    cfg.TRAINER.CLIPFIT.PARAMS_INCLUDE = []  # parameter-name patterns tuned as well, e.g. ["ln_final"]
    cfg.TRAINER.CLIPFIT.PARAMS_EXCLUDE = []  # parameter-name patterns never tuned
    cfg.TRAINER.CLIPFIT.PREC = "fp16"  # fp16, amp, bf16, fp32
    cfg.TRAINER.CLIPFIT.LOG_GRAD_STATS = False  # record per-layer gradient statistics
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


class ConfigKeyError(KeyError):
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


def merge_from_file(cfg: CN, path: str) -> None:
    """``cfg.merge_from_file`` with errors naming the file, the unknown key and its closest match."""
    other = load_cfg_file(cfg, path)
    missing = _unknown_keys(cfg, other)
    if missing:
        raise ConfigKeyError(missing[0], path, closest_key(missing[0], flat_keys(cfg)))
    cfg.merge_from_other_cfg(other)


def merge_from_list(cfg: CN, opts: Sequence[str]) -> None:
    """``cfg.merge_from_list`` with an error naming the unknown key and its closest match."""
    if len(opts) % 2:
        raise ValueError(
            f"Config opts must come in KEY VALUE pairs, got {len(opts)} items: {list(opts)}"
        )
    known = set(flat_keys(cfg))
    for key in opts[0::2]:
        if key not in known:
            raise ConfigKeyError(key, "command-line opts", closest_key(key, known))
    cfg.merge_from_list(list(opts))


def get_cfg() -> CN:
    """Dassl's defaults (from the active engine) plus this project's keys."""
    from clipfit.engine import get_cfg_default

    return extend_cfg(get_cfg_default())
