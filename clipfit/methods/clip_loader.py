"""Load OpenAI CLIP weights into a plain ``clip.model.CLIP``.

Where the weights come from, in order:

1. ``MODEL.BACKBONE.PATH`` when set: a JIT archive (as OpenAI publishes them) or a
   plain state dict with OpenAI key names (``visual.*``, ``transformer.*``, ...).
2. The file the ``clip`` package caches for ``MODEL.BACKBONE.NAME``:
   ``<cache>/<basename of the download URL>``, e.g. ``~/.cache/clip/ViT-B-16.pt``.
   ``CLIPFIT_CLIP_CACHE`` moves the cache directory.
3. A download into that cache directory (skipped when ``CLIPFIT_CLIP_OFFLINE=1``).

A name ``open_clip:<arch>[:<tag>]`` loads through open_clip instead
(:mod:`clipfit.methods.open_clip_loader`; the name decides the architecture, the path only the weights).
The name ``toy`` (with no path) loads the toy CLIP shipped in :mod:`clipfit.toyworld`,
checked against its SHA-256; a packed toy file also loads from ``MODEL.BACKBONE.PATH``.
Otherwise :class:`CLIPWeightsNotFoundError` names the path looked at, the URL and
the config key to set. The model is built with ``clip.model.build_model``, so any
size works (including the tiny random models of :mod:`clipfit.testing.tiny_clip`),
and returned in fp32 on the CPU: precision and device are the trainer's choice.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from typing import Dict, Tuple, Union

import torch
import torch.nn as nn
from yacs.config import CfgNode

from clipfit.methods import open_clip_loader
from clipfit.methods.openai_clip import CLIP, build_model, clip_api
from clipfit.toyworld import weights as toy_weights
from clipfit.errors import ConfigValueError, UserError

CACHE_ENV = "CLIPFIT_CLIP_CACHE"
OFFLINE_ENV = "CLIPFIT_CLIP_OFFLINE"
DEFAULT_CACHE = os.path.join("~", ".cache", "clip")
_ARCHIVE_EXTRAS = ("input_resolution", "context_length", "vocab_size")  # JIT-only entries
_REQUIRED_KEYS = ("text_projection", "positional_embedding", "token_embedding.weight", "ln_final.weight")


class CLIPWeightsFileError(UserError, RuntimeError):
    """A weights file that is not CLIP weights in a format this loader reads."""


class CLIPWeightsNotFoundError(UserError, FileNotFoundError):
    """CLIP weights are neither configured, cached nor downloadable."""

    def __str__(self) -> str:
        return self.args[0]


def clip_cache_dir() -> str:
    """The directory the weights are cached in (``$CLIPFIT_CLIP_CACHE`` or ``~/.cache/clip``)."""
    return os.path.expanduser(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


def download_url(name: str) -> str:
    """OpenAI's download URL for a backbone name of ``clip_api.available_models()``."""
    if name not in clip_api.available_models():
        raise ConfigValueError(
            f"Unknown CLIP backbone {name!r} (MODEL.BACKBONE.NAME). Known names: "
            f"{', '.join(clip_api.available_models())}, {toy_weights.TOY_NAME} (the shipped toy CLIP). For other weights set MODEL.BACKBONE.PATH "
            "to a JIT archive or an OpenAI-format state dict."
        )
    return clip_api._MODELS[name]


def cached_weights_path(name: str) -> str:
    """Where the ``clip`` package stores (and we look for) the weights of ``name``; for
    ``open_clip:<arch>:<tag>``, the tag's file in open_clip's caches (the first place looked at
    when it is in none); for the toy CLIP, the file shipped in the package."""
    if name == toy_weights.TOY_NAME:
        return toy_weights.SHIPPED_FILE
    if open_clip_loader.is_open_clip(name):
        arch, tag = open_clip_loader.parse_name(name)
        paths = open_clip_loader.tag_cache_paths(arch, tag) if tag else []
        if not paths:
            raise ConfigValueError(f"{name} names no pretrained tag, so it has no cached weights file.")
        return next((p for p in paths if os.path.isfile(p)), paths[0])
    return os.path.join(clip_cache_dir(), os.path.basename(download_url(name)))


def _sha256_matches(path: str, url: str) -> bool:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest() == url.split("/")[-2]


def resolve_weights(name: str, path: str = "") -> str:
    """The local weights file for backbone ``name`` (see the module docstring for the order)."""
    if open_clip_loader.is_open_clip(name):
        return open_clip_loader.resolve_weights(name, path)
    if path:
        path = os.path.expanduser(path)
        if not os.path.isfile(path):
            raise CLIPWeightsNotFoundError(
                f"MODEL.BACKBONE.PATH is {path!r}, which is not a file. Set it to a CLIP JIT "
                "archive or an OpenAI-format state dict, or set it to '' to use the download "
                f"cache for MODEL.BACKBONE.NAME ({name})."
            )
        return path
    if name == toy_weights.TOY_NAME:
        return toy_weights.SHIPPED_FILE
    url = download_url(name)
    target = cached_weights_path(name)
    if os.path.isfile(target) and _sha256_matches(target, url):
        return target
    found = "exists but its SHA256 checksum does not match (partial download?)" if os.path.isfile(
        target
    ) else "does not exist"
    if os.environ.get(OFFLINE_ENV, "") not in ("", "0"):
        reason = f"downloads are disabled by {OFFLINE_ENV}={os.environ[OFFLINE_ENV]}"
    else:
        try:
            return clip_api._download(url, clip_cache_dir())
        except Exception as err:  # offline, proxy, disk full, bad checksum: all end the same way
            reason = f"the download failed ({type(err).__name__}: {err})"
    raise CLIPWeightsNotFoundError(
        f"CLIP weights for {name} not found: {target} {found} and {reason}. Download {url} "
        f"and put it at {target} (the cache directory is set by {CACHE_ENV}), or set "
        f"MODEL.BACKBONE.PATH to the downloaded file."
    )


def read_any_state_dict(path: str) -> Tuple[Dict[str, torch.Tensor], bool]:
    """The tensors in ``path`` (a TorchScript archive or a saved state dict, any key names) and
    whether it was a TorchScript archive (the format OpenAI publishes its weights in)."""
    with open(path, "rb") as f:
        try:
            with warnings.catch_warnings():  # torch's "torch.jit.load is deprecated" notice
                warnings.filterwarnings("ignore", message=r".*torch\.jit\.load.* is deprecated")
                return dict(torch.jit.load(f, map_location="cpu").state_dict()), True
        except RuntimeError:
            f.seek(0)
            try:
                state_dict = torch.load(f, map_location="cpu", weights_only=True)
            except Exception as err:
                raise CLIPWeightsFileError(
                    f"{path} is neither a TorchScript archive nor a saved state dict ({err}). "
                    "If it is a partial download, delete it and load again."
                ) from err
    if not isinstance(state_dict, dict):
        raise CLIPWeightsFileError(f"{path} holds a {type(state_dict).__name__}, not a state dict: save the "
                                   "model's state_dict() itself.")
    return dict(state_dict), False


def read_state_dict(path: str) -> Dict[str, torch.Tensor]:
    """The OpenAI-format state dict in ``path`` (JIT archive, saved state dict or packed toy CLIP)."""
    if toy_weights.is_packed(path):
        return toy_weights.unpack(path)
    state_dict, _ = read_any_state_dict(path)
    if any(k not in state_dict for k in _REQUIRED_KEYS):
        raise CLIPWeightsFileError(
            f"{path} does not hold CLIP weights with OpenAI key names (expected keys such as "
            f"{', '.join(_REQUIRED_KEYS)}; found {list(state_dict)[:5]}). Save the model's state_dict() itself."
        )
    return state_dict


def load_clip(source: Union[CfgNode, str], path: str = "") -> nn.Module:
    """A CLIP model in fp32 on the CPU, from a config (``MODEL.BACKBONE``) or a backbone name
    (``open_clip:<arch>[:<tag>]`` loads through :mod:`clipfit.methods.open_clip_loader`)."""
    if isinstance(source, CfgNode):
        name, path = source.MODEL.BACKBONE.NAME, source.MODEL.BACKBONE.PATH
    else:
        name = source
    if open_clip_loader.is_open_clip(name):
        return open_clip_loader.load_open_clip(name, path)
    weights = resolve_weights(name, path)
    print(f"Loading CLIP (backbone: {name}) from {weights}")
    if weights == toy_weights.SHIPPED_FILE:  # checked against its recorded SHA-256
        return build_clip(toy_weights.shipped_state_dict())
    return build_clip(read_state_dict(weights))


def build_clip(state_dict: Dict[str, torch.Tensor]) -> CLIP:
    """``clip.model.build_model`` in fp32, keeping the exact values of fp32 weights.

    (``build_model`` rounds every weight to fp16 while loading; the reload undoes that.)
    """
    model = build_model(dict(state_dict)).float()
    model.load_state_dict({k: v for k, v in state_dict.items() if k not in _ARCHIVE_EXTRAS})
    return model.eval()


def weights_fingerprint(model: torch.nn.Module) -> str:
    """A short SHA-256 of every tensor of ``model`` (names, shapes, values in fp32).

    Computed on the pre-trained model before any tuning, so it identifies the weights a
    checkpoint was tuned from, whatever file format or precision they were loaded in.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        value = tensor.detach().to("cpu", torch.float32).contiguous()
        digest.update(f"{name}{tuple(value.shape)}".encode())
        digest.update(value.numpy().tobytes())
    return digest.hexdigest()[:16]


def architecture(model: nn.Module) -> Dict[str, Union[str, int]]:
    """The dimensions ``build_model`` infers from the weights: identifies an architecture
    (open_clip models: :func:`clipfit.methods.open_clip_loader.architecture`)."""
    if not isinstance(model, CLIP):
        return open_clip_loader.architecture(model)
    visual = model.visual
    vit = hasattr(visual, "conv1") and hasattr(visual, "ln_pre")
    if vit:
        vision_layers: Union[int, str] = len(visual.transformer.resblocks)
        vision_width = visual.conv1.out_channels
        patch = visual.conv1.kernel_size[0]
    else:
        vision_layers = "-".join(str(len(getattr(visual, f"layer{i}"))) for i in range(1, 5))
        vision_width = visual.layer1[0].conv1.out_channels
        patch = 0
    return {
        "image_encoder": "ViT" if vit else "ResNet",
        "image_resolution": int(visual.input_resolution),
        "vision_layers": vision_layers,
        "vision_width": int(vision_width),
        "patch_size": int(patch),
        "embed_dim": int(model.text_projection.shape[1]),
        "text_width": int(model.ln_final.weight.shape[0]),
        "text_layers": len(model.transformer.resblocks),
        "context_length": int(model.context_length),
        "vocab_size": int(model.vocab_size),
    }
