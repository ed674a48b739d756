"""Every method's options with their defaults, defined once: one dataclass per group of keys.

Each dataclass field is the config key ``TRAINER.<NODE>.<KEY>``: ``KEY`` is the field name in
upper case unless ``metadata["key"]`` names it (``CLASS_TOKEN_POSITION`` for ``position``); a
field with ``metadata["key"] = None`` is no config key. :data:`NODE_OPTIONS` says which classes
make each ``TRAINER.<NODE>``; :func:`clipfit.training.config.project_keys` builds the yacs keys
from them (:func:`defaults_node`), and the methods read a node back as keyword arguments
(:func:`from_node`), so a default is written here and nowhere else: the model constructors take
their defaults from these classes too.

Standard library only (and :mod:`clipfit.errors`): the config keys are known without importing torch.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Tuple, Type

from clipfit.errors import ConfigValueError

REG_CHOICES = ("kd", "mse", "none")  # CLIPFit's regulariser (TRAINER.CLIPFIT.REG)
PROGRAD_TEMPLATE_INIT = "template"  # TRAINER.COOP.CTX_INIT value: ProGrad's context from its dataset prompt


class Options:
    """Base of the option classes: :meth:`from_cfg` reads one from its config node by keyword."""

    @classmethod
    def from_cfg(cls, node: Mapping[str, Any]) -> Any:
        """The options of the config node ``node`` (e.g. ``cfg.TRAINER.CLIPFIT``)."""
        return cls(**from_node(cls, node))


def key(name: Optional[str], **kwargs: Any) -> Any:
    """A field whose config key is ``name`` (None: not a config key); ``kwargs`` go to ``field``."""
    return field(metadata={"key": name}, **kwargs)


@dataclass
class CLIPFitSettings(Options):
    """CLIPFit (``TRAINER.CLIPFIT.*``): which parameters are tuned and the regulariser."""

    text_params: str = "proj_bias"  # proj_bias, ffn_bias, all_bias, none
    image_params: str = "layernorm"  # layernorm, bias, none
    text_layers: List[int] = field(default_factory=list)  # block indices to tune; empty: all
    image_layers: List[int] = field(default_factory=list)  # block indices to tune; empty: all
    params_include: List[str] = field(default_factory=list)  # parameter-name patterns tuned as well, e.g. ["ln_final"]
    params_exclude: List[str] = field(default_factory=list)  # parameter-name patterns never tuned
    reg: str = "kd"  # kd, mse, none
    beta: float = 8.0  # weight of the regulariser

    def check(self) -> None:
        """Errors that name the config key and the accepted values."""
        if self.reg not in REG_CHOICES:
            raise ConfigValueError(f"TRAINER.CLIPFIT.REG is {self.reg!r}; choose one of {', '.join(REG_CHOICES)}.")
        if not self.beta >= 0:
            raise ConfigValueError(f"TRAINER.CLIPFIT.BETA is {self.beta}; it must be a number >= 0.")


@dataclass
class PromptSettings(Options):
    """CoOp's prompt (``TRAINER.COOP.*``; also KgCoOp's and ProGrad's)."""

    n_ctx: int = 16  # number of context vectors (ignored when ctx_init is given: its tokens decide)
    ctx_init: str = ""  # initialisation phrase, e.g. "a photo of a"
    csc: bool = False  # class-specific context
    position: str = key("CLASS_TOKEN_POSITION", default="end")  # end, middle, front
    key_prefix: str = key(None, default="TRAINER.COOP.")  # config node the options came from (named in errors)


@dataclass
class KgCoOpSettings(Options):
    """KgCoOp's knowledge-guided term (``TRAINER.COOP.W``, ``KG_DISTANCE``)."""

    weight: float = key("W", default=8.0)  # weight of the knowledge-guided term
    distance: str = key("KG_DISTANCE", default="cosine")  # cosine (its code) or euclidean (its paper)


@dataclass
class CoCoOpSettings(Options):
    """CoCoOp (``TRAINER.COCOOP.*``), defaults of CoOp's train.py (its configs set 4 and "a photo of a")."""

    n_ctx: int = 16
    ctx_init: str = ""
    text_batch: int = key("TEXT_BATCH_SIZE", default=1000)  # most prompts per text-encoder pass (same result)


@dataclass
class CLIPAdapterSettings(Options):
    """CLIP-Adapter (``TRAINER.CLIP_ADAPTER.*``)."""

    reduction: int = 4  # bottleneck reduction factor
    ratio: float = 0.2  # residual ratio of adapted features


@dataclass
class MaPLeSettings(Options):
    """MaPLe (``TRAINER.MAPLE.*``)."""

    n_ctx: int = 2  # learned prompt tokens per layer
    ctx_init: str = "a photo of a"  # its first N_CTX tokens start the context
    depth: int = key("PROMPT_DEPTH", default=9)  # layers with prompts (1: shallow)


@dataclass
class ProGradSettings(Options):
    """ProGrad (``TRAINER.PROGRAD.*``); its prompt is CoOp's (:class:`PromptSettings`)."""

    lam: float = key("LAMBDA", default=1.0)  # share of the conflicting gradient part removed
    temperature: float = key("T", default=1.0)  # temperature of the zero-shot teacher's distillation term


@dataclass
class TipSettings(Options):
    """Tip-Adapter and Tip-Adapter-F (``TRAINER.TIP_ADAPTER.*``)."""

    init_alpha: float = 1.0  # residual weight of the cache logits
    init_beta: float = 1.0  # sharpness of the cache affinities
    search: bool = True  # search alpha and beta on the validation set
    search_scale: Tuple[float, float] = (7.0, 3.0)  # (beta, alpha) upper ends of the grid
    search_step: Tuple[int, int] = (200, 20)  # (beta, alpha) grid sizes
    augment_epoch: int = 10  # augmented views averaged per cache key
    clip_scale: float = 100.0  # scale of the zero-shot logits (its code: 100)
    adamw_eps: float = 1e-4  # Tip-Adapter-F's AdamW epsilon

    def check(self) -> "TipSettings":
        """Self, or an error naming the first bad key."""
        prefix = "TRAINER.TIP_ADAPTER."
        if len(self.search_scale) != 2 or not all(v > 0.1 for v in self.search_scale):
            raise ConfigValueError(f"{prefix}SEARCH_SCALE is {list(self.search_scale)}; give [beta_max, alpha_max], "
                                   "each above 0.1 (the grid starts at 0.1).")
        if len(self.search_step) != 2 or not all(isinstance(v, int) and v >= 1 for v in self.search_step):
            raise ConfigValueError(f"{prefix}SEARCH_STEP is {list(self.search_step)}; give two integers >= 1 "
                                   "(grid sizes for beta and alpha).")
        if not (isinstance(self.augment_epoch, int) and self.augment_epoch >= 1):
            raise ConfigValueError(f"{prefix}AUGMENT_EPOCH is {self.augment_epoch!r}; use an integer >= 1.")
        for name, value in (("INIT_ALPHA", self.init_alpha), ("INIT_BETA", self.init_beta),
                            ("CLIP_SCALE", self.clip_scale)):
            if not value >= 0:
                raise ConfigValueError(f"{prefix}{name} is {value}; it must be a number >= 0.")
        return self

    def grid(self) -> Tuple[List[float], List[float]]:
        """Tip-Adapter's beta and alpha candidates."""
        (bs, as_), (bn, an) = self.search_scale, self.search_step
        return ([i * (bs - 0.1) / bn + 0.1 for i in range(bn)], [i * (as_ - 0.1) / an + 0.1 for i in range(an)])


# TRAINER.<NODE> -> the option classes whose keys it holds (the trainer's own keys, such as PREC,
# are added by clipfit.training.config)
NODE_OPTIONS: Dict[str, Tuple[type, ...]] = {
    "CLIPFIT": (CLIPFitSettings,),
    "COOP": (PromptSettings, KgCoOpSettings),
    "COCOOP": (CoCoOpSettings,),
    "CLIP_ADAPTER": (CLIPAdapterSettings,),
    "MAPLE": (MaPLeSettings,),
    "PROGRAD": (ProGradSettings,),
    "TIP_ADAPTER": (TipSettings,),
}


def config_fields(cls: type) -> Dict[str, dataclasses.Field]:
    """``{config key: field}`` of the option class ``cls``."""
    out = {}
    for f in dataclasses.fields(cls):
        name = f.metadata.get("key", f.name.upper())
        if name is not None:
            out[name] = f
    return out


def default_of(f: dataclasses.Field) -> Any:
    """The default value of field ``f``."""
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def defaults_node(cls: type) -> Dict[str, Any]:
    """``{config key: default}`` of ``cls`` (tuples as lists, as yacs keys hold them)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in
            ((k, default_of(f)) for k, f in config_fields(cls).items())}


def _coerce(value: Any, default: Any) -> Any:
    """``value`` as the field's type: floats from ints, lists and tuples from yacs lists. Integers
    are kept as given, so that a float where an integer belongs reaches the method's check."""
    if isinstance(default, bool):
        return bool(value)
    if isinstance(default, float):
        return float(value)
    if isinstance(default, (list, tuple)):
        items = [float(v) if default and isinstance(default[0], float) else v for v in value]
        return type(default)(items)
    return value


def from_node(cls: Type[Any], node: Mapping[str, Any]) -> Dict[str, Any]:
    """Keyword arguments of ``cls`` read from its config node (a yacs ``CfgNode``)."""
    return {f.name: _coerce(node[k], default_of(f)) for k, f in config_fields(cls).items()}
