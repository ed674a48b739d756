"""Load open_clip backbones: ``MODEL.BACKBONE.NAME open_clip:<arch>[:<tag>]``.

The name decides the architecture, always: open_clip builds ``<arch>`` from its model config
(``create_model(arch, pretrained=None)``), then the weights are loaded into it strictly. A
weights file whose keys or shapes do not fit is refused, naming the file and the
architecture. Where the weights come from:

1. ``MODEL.BACKBONE.PATH`` when set (a state dict, a ``{"state_dict": ...}`` checkpoint, a
   ``.safetensors`` file or a TorchScript archive). A tag in the name then only decides the
   preprocessing.
2. The pretrained tag's file in the local caches open_clip downloads into: the Hugging Face
   hub cache for tags served there, else ``~/.cache/clip/<file of the URL>``. Nothing is
   downloaded here; a missing file is :class:`OpenCLIPWeightsNotFoundError` naming the tag, the
   paths looked at and the one command that fetches it on a machine with internet.

The activation is not in the weights: open_clip's ``ViT-B-16`` (LAION, DataComp recipes) uses
GELU, OpenAI's weights and the ``*-quickgelu`` variants QuickGELU. The log says which was built;
a tag trained with the other one, or an OpenAI TorchScript archive loaded into a GELU
architecture, is refused with the name to use instead.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn as nn

from clipfit.methods import open_clip_lib
from clipfit.methods.backbone import SPEC_ATTR, OpenCLIPSpec, backbone
from clipfit.errors import ConfigValueError, MissingFileError

PREFIX = "open_clip:"
_JIT_EXTRAS = ("input_resolution", "context_length", "vocab_size")


class OpenCLIPWeightsNotFoundError(MissingFileError):
    """A pretrained tag whose file is in no local cache (or no weights named at all)."""


class WeightsMismatchError(ConfigValueError):
    """A weights file that does not fit the named architecture."""


def is_open_clip(name: str) -> bool:
    """Whether ``MODEL.BACKBONE.NAME`` names an open_clip backbone."""
    return str(name).startswith(PREFIX)


def parse_name(name: str) -> Tuple[str, str]:
    """``(arch, tag)`` of ``open_clip:<arch>[:<tag>]``; an unknown architecture or tag is an error."""
    oc = open_clip_lib.require()
    arch, _, tag = name[len(PREFIX):].partition(":")
    if oc.get_model_config(arch) is None:
        near = [m for m in oc.list_models() if arch.lower()[:6] in m.lower()][:8]
        raise ConfigValueError(
            f"MODEL.BACKBONE.NAME {name!r}: open_clip has no architecture {arch!r}"
            f"{' (similar: ' + ', '.join(near) + ')' if near else ''}. open_clip.list_models() lists them."
        )
    if tag:
        tags = open_clip_lib.submodule("pretrained").list_pretrained_tags_by_model(arch)
        if tag not in tags:
            raise ConfigValueError(f"MODEL.BACKBONE.NAME {name!r}: {arch} has no pretrained tag {tag!r}; its "
                                   f"tags: {', '.join(tags) or 'none'}.")
    return arch, tag


def _tag_cfg(arch: str, tag: str) -> Dict[str, Any]:
    return open_clip_lib.submodule("pretrained").get_pretrained_cfg(arch, tag) if tag else {}


def fetch_command(arch: str, tag: str) -> str:
    """The command that downloads a tag's weights into open_clip's cache (on a machine with internet)."""
    return f"python -c \"import open_clip; open_clip.create_model('{arch}', pretrained='{tag}')\""


def tag_cache_paths(arch: str, tag: str) -> List[str]:
    """Where open_clip's download of ``arch``/``tag`` lies (existing or not), most preferred first."""
    cfg = _tag_cfg(arch, tag)
    paths = []
    if cfg.get("hf_hub"):
        from huggingface_hub import try_to_load_from_cache
        from huggingface_hub.constants import HF_HUB_CACHE

        repo, filename = os.path.split(cfg["hf_hub"])  # "org/name/" names the default file
        names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        for n in names:
            found = try_to_load_from_cache(repo, n)
            paths.append(found if isinstance(found, str) else
                         os.path.join(HF_HUB_CACHE, "models--" + repo.replace("/", "--"), "snapshots", "*", n))
    if cfg.get("url"):
        paths.append(os.path.join(os.path.expanduser("~/.cache/clip"), os.path.basename(cfg["url"])))
    return paths


def resolve_weights(name: str, path: str = "") -> str:
    """The local weights file for ``open_clip:<arch>[:<tag>]`` (see the module docstring)."""
    arch, tag = parse_name(name)
    if path:
        path = os.path.expanduser(path)
        if not os.path.isfile(path):
            raise OpenCLIPWeightsNotFoundError(
                f"MODEL.BACKBONE.PATH is {path!r}, which is not a file. Set it to the weights of open_clip's {arch} "
                f"(its state_dict()), or to '' to use a pretrained tag (MODEL.BACKBONE.NAME open_clip:{arch}:<tag>).")
        return path
    tags = open_clip_lib.submodule("pretrained").list_pretrained_tags_by_model(arch)
    if not tag:
        raise OpenCLIPWeightsNotFoundError(
            f"MODEL.BACKBONE.NAME {name} names no weights: add a pretrained tag (open_clip:{arch}:<tag>; tags: "
            f"{', '.join(tags) or 'none'}) or set MODEL.BACKBONE.PATH to a weights file of this architecture.")
    candidates = tag_cache_paths(arch, tag)
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    raise OpenCLIPWeightsNotFoundError(
        f"The weights of open_clip:{arch}:{tag} are not in the local cache (looked at: {'; '.join(candidates)}). "
        f"On a machine with internet, fetch them with\n  {fetch_command(arch, tag)}\nand copy the cache "
        "(~/.cache/huggingface/hub or ~/.cache/clip) here, or set MODEL.BACKBONE.PATH to the file.")


def _read_weights(path: str) -> Tuple[Dict[str, torch.Tensor], bool]:
    """Tensors of a weights file and whether it is a TorchScript archive (OpenAI's format)."""
    from clipfit.methods.clip_loader import read_any_state_dict  # clip_loader dispatches to this module

    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return dict(load_file(path, device="cpu")), False
    state_dict, jit = read_any_state_dict(path)
    if isinstance(state_dict.get("state_dict"), dict):
        state_dict = state_dict["state_dict"]
    if state_dict and all(k.startswith("module.") for k in state_dict):
        state_dict = {k[len("module."):]: v for k, v in state_dict.items()}
    return {k: v for k, v in state_dict.items() if k not in _JIT_EXTRAS}, jit


def _model_config(arch: str) -> Dict[str, Any]:
    return open_clip_lib.require().get_model_config(arch)


def check_supported(arch: str) -> None:
    """Refuse towers the methods cannot work on, saying why."""
    cfg = _model_config(arch)
    text = cfg.get("text_cfg", {})
    if text.get("hf_model_name"):
        raise ConfigValueError(
            f"open_clip:{arch} has a Hugging Face text tower ({text['hf_model_name']}): not supported. Every method "
            "here needs open_clip's own text transformer (CLIPFit tunes its FFN biases, prompt learners feed its "
            "token embeddings), which this tower does not have.")
    if "multimodal_cfg" in cfg or text.get("embed_cls"):
        raise ConfigValueError(f"open_clip:{arch} is a CoCa captioning model (class token appended to the text): "
                               "not supported; pick a contrastive architecture (open_clip.list_models()).")


def preprocess_cfg(arch: str, tag: str, size: Any) -> Tuple[Dict[str, Any], List[str]]:
    """The preprocessing of ``arch``: the tag's, else the one every tag of ``arch`` shares, else
    open_clip's defaults (OpenAI's mean/std, bicubic, shortest-side resize); and notes for the log."""
    pretrained = open_clip_lib.submodule("pretrained")
    keys = ("mean", "std", "interpolation", "resize_mode")
    default = dict(zip(keys, (list(open_clip_lib.require().OPENAI_DATASET_MEAN),
                              list(open_clip_lib.require().OPENAI_DATASET_STD), "bicubic", "shortest")))
    notes = []
    if tag:
        cfgs = [pretrained.get_pretrained_cfg(arch, tag)]
    else:
        cfgs = [pretrained.get_pretrained_cfg(arch, t) for t in pretrained.list_pretrained_tags_by_model(arch)]
    found = {tuple((k, tuple(c[k]) if isinstance(c.get(k), (list, tuple)) else c.get(k)) for k in keys if k in c)
             for c in cfgs}
    out = dict(default)
    if len(found) == 1:
        out.update({k: list(v) if isinstance(v, tuple) else v for k, v in next(iter(found))})
    elif len(found) > 1:
        notes.append(f"the tags of {arch} differ in preprocessing; using open_clip's defaults: name the tag "
                     f"(open_clip:{arch}:<tag>) to use its preprocessing")
    out["size"] = size[0] if isinstance(size, (tuple, list)) else int(size)
    return out, notes


def tag_quick_gelu(arch: str, tag: str) -> Optional[bool]:
    """The activation a tag was trained with (None when the tag does not say)."""
    return _tag_cfg(arch, tag).get("quick_gelu") if tag else None


def build_open_clip(arch: str, tag: str = "", tokenizer: Optional[Any] = None) -> nn.Module:
    """open_clip's ``arch`` with random weights, in fp32 on the CPU, with its tokenizer (or the
    stand-in ``tokenizer``, for offline benchmarks) and spec attached."""
    oc = open_clip_lib.require()
    check_supported(arch)
    quick_gelu = bool(_model_config(arch).get("quick_gelu", False))
    with open_clip_lib.quiet():
        model = oc.create_model(arch, pretrained=None)
    try:
        tokenizer = tokenizer or oc.get_tokenizer(arch, context_length=model.context_length)
    except Exception as err:  # a Hugging Face tokenizer: needs `transformers` and its files from the hub
        raise OpenCLIPWeightsNotFoundError(
            f"The tokenizer of open_clip:{arch} cannot be loaded here ({type(err).__name__}: {err}). It comes from "
            "the Hugging Face hub: install transformers and, on a machine with internet, run\n  python -c \"import "
            f"open_clip; open_clip.get_tokenizer('{arch}')\"\nthen copy ~/.cache/huggingface here.") from err
    clip_bpe = isinstance(tokenizer, oc.SimpleTokenizer) and tokenizer.vocab_size == model.vocab_size == 49408
    preprocess, notes = preprocess_cfg(arch, tag, model.visual.preprocess_cfg["size"])
    spec = OpenCLIPSpec(arch, tag, quick_gelu, preprocess, tokenizer, clip_bpe, notes)
    setattr(model, SPEC_ATTR, spec)
    backbone(model)  # refuses image towers no adapter covers
    return model.float().eval()


def fit_differences(model: nn.Module, state_dict: Dict[str, torch.Tensor]) -> List[str]:
    """Keys missing from, or unexpected in, ``state_dict``, and shapes that differ from ``model``'s."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    extra = [k for k in state_dict if k not in own]
    shapes = [f"{k} {list(state_dict[k].shape)} (architecture {list(own[k].shape)})"
              for k in own if k in state_dict and state_dict[k].shape != own[k].shape]
    out = []
    for label, names in (("missing", missing), ("unexpected", extra), ("shapes differ", shapes)):
        if names:
            out.append(f"{label}: {', '.join(names[:4])}{f', ... ({len(names)} in all)' if len(names) > 4 else ''}")
    return out


def load_open_clip(name: str, path: str = "") -> nn.Module:
    """The open_clip model ``name`` with its weights (fp32, CPU, eval)."""
    arch, tag = parse_name(name)
    built, trained = bool(_model_config(arch).get("quick_gelu", False)), tag_quick_gelu(arch, tag)
    if trained is not None and trained != built:
        other = f"{arch}-quickgelu" if trained else arch.replace("-quickgelu", "")
        raise WeightsMismatchError(
            f"The tag {tag} was trained with {'QuickGELU' if trained else 'GELU'}, but open_clip's {arch} builds "
            f"{'QuickGELU' if built else 'GELU'}: use MODEL.BACKBONE.NAME open_clip:{other}:{tag}.")
    weights = resolve_weights(name, path)
    model = build_open_clip(arch, tag)
    spec = getattr(model, SPEC_ATTR)
    state_dict, jit = _read_weights(weights)
    if getattr(model, "text", None) is not None and "positional_embedding" in state_dict:
        state_dict = open_clip_lib.submodule("model").convert_to_custom_text_state_dict(state_dict)
    for key in ("logit_scale", "logit_bias"):  # scalar vs 1-d, as open_clip's own loader accepts
        own = model.state_dict().get(key)
        if own is not None and key in state_dict and state_dict[key].numel() == own.numel():
            state_dict[key] = state_dict[key].reshape(own.shape)
    transient = {n for n, _ in model.named_buffers()} - set(model.state_dict())  # e.g. a traced attn_mask
    state_dict = {k: v for k, v in state_dict.items() if k not in transient}
    diffs = fit_differences(model, state_dict)
    if diffs:
        raise WeightsMismatchError(
            f"The weights in {weights} do not fit open_clip's {arch} (MODEL.BACKBONE.NAME {name}):\n  - "
            + "\n  - ".join(diffs) + "\nName the architecture these weights belong to, or set MODEL.BACKBONE.PATH "
            "to weights of this one.")
    other = f"{arch}-quickgelu" if not spec.quick_gelu else arch.replace("-quickgelu", "")
    if jit and not spec.quick_gelu:
        raise WeightsMismatchError(
            f"{weights} is a TorchScript archive, the format OpenAI publishes its CLIP weights in, trained with "
            f"QuickGELU; open_clip's {arch} uses GELU. Use MODEL.BACKBONE.NAME open_clip:{other} (or OpenAI's "
            "name, e.g. ViT-B/16, for the default loader).")
    model.load_state_dict(state_dict, strict=True)
    print(f"Loading open_clip {arch} (backbone: {name}) from {weights}")
    print(f"Activation: {'QuickGELU' if spec.quick_gelu else 'GELU'} (open_clip's {arch}; the activation is not in the "
          f"weights: for weights trained with {'GELU' if spec.quick_gelu else 'QuickGELU'} use open_clip:{other})")
    p = spec.preprocess
    print(f"Preprocessing: {p['size']} px, mean {p['mean']}, std {p['std']}, {p['interpolation']}, resize "
          f"{p['resize_mode']}; tokenizer {type(spec.tokenizer).__name__}, context {model.context_length}")
    for note in spec.notes:
        print(f"Note: {note}")
    return model.float().eval()


def architecture(model: nn.Module) -> Dict[str, Any]:
    """What identifies an open_clip model in a checkpoint's meta."""
    spec: OpenCLIPSpec = getattr(model, SPEC_ATTR)
    bb = backbone(model)
    return {
        "library": "open_clip",
        "arch": spec.arch,
        "activation": "QuickGELU" if spec.quick_gelu else "GELU",
        "image_encoder": bb.image.kind,
        "image_resolution": bb.input_size,
        "embed_dim": bb.image.embed_dim,
        "text_width": bb.text.width,
        "text_layers": len(bb.text.blocks),
        "context_length": bb.text.context_length,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
