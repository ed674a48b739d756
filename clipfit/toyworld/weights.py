"""The shipped toy CLIP: a small packed file, checked by SHA-256 before it is trusted.

Packing keeps an OpenAI-format state dict in fp16 with only the token-embedding rows
of tokens the toy world uses (every other row of the 49,408 is zero), saved with
``torch.save`` and compressed with lzma. Unpacking restores the full fp32 state dict,
so ``clip.model.build_model`` and :func:`clipfit.methods.clip_loader.build_clip` take it as
they take OpenAI's weights.
"""
from __future__ import annotations

import hashlib
import io
import lzma
import os
from typing import Dict, Iterable

import torch

from clipfit.fileio import atomic_path
from clipfit.errors import UserError

TOY_NAME = "toy"  # MODEL.BACKBONE.NAME that loads the shipped weights
SHIPPED_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "toy_clip.pt.xz")
SHIPPED_SHA256 = "9711cabdcb84e450a7832f03c1be52af20e66614f9e6614eac9e36a263861bf2"
MAGIC = b"\xfd7zXZ\x00"  # lzma (xz) container
_ROWS = "token_embedding.rows"
_IDS = "token_embedding.ids"
_FORMAT = "clipfit-toy-clip-v1"


class ToyWeightsError(UserError, RuntimeError):
    """The shipped (or a packed) toy CLIP file is missing or damaged."""


def sha256_of(path: str) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def pack(state_dict: Dict[str, torch.Tensor], used_tokens: Iterable[int], path: str) -> str:
    """Write ``state_dict`` packed (fp16, used token rows only, lzma); returns its SHA-256."""
    ids = torch.tensor(sorted(set(int(t) for t in used_tokens)), dtype=torch.long)
    packed = {k: v.detach().to(torch.float16) if v.is_floating_point() else v for k, v in state_dict.items()}
    table = packed.pop("token_embedding.weight")
    packed[_IDS] = ids
    packed[_ROWS] = table[ids].clone()
    packed["format"] = torch.tensor([ord(c) for c in _FORMAT], dtype=torch.uint8)
    packed["vocab_size"] = torch.tensor(table.shape[0])
    buffer = io.BytesIO()
    torch.save(packed, buffer)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(lzma.compress(buffer.getvalue(), preset=9 | lzma.PRESET_EXTREME))
    return sha256_of(path)


def is_packed(path: str) -> bool:
    """Whether ``path`` starts like a packed toy CLIP (an xz container)."""
    with open(path, "rb") as f:
        return f.read(len(MAGIC)) == MAGIC


def unpack(path: str, sha256: str = "") -> Dict[str, torch.Tensor]:
    """The fp32 OpenAI-format state dict in a packed file, checked against ``sha256`` when given."""
    if not os.path.isfile(path):
        raise ToyWeightsError(f"The toy CLIP file {path} does not exist. Reinstall the package, or remake it "
                              "with `python -m clipfit.toyworld pretrain --out FILE` (see the README).")
    if sha256 and sha256_of(path) != sha256:
        raise ToyWeightsError(
            f"The toy CLIP file {path} is damaged: its SHA-256 is {sha256_of(path)}, expected {sha256}. "
            "Restore it from the repository (git checkout -- that file) or reinstall the package."
        )
    try:
        data = torch.load(io.BytesIO(lzma.decompress(open(path, "rb").read())), map_location="cpu", weights_only=True)
        fmt = "".join(chr(int(c)) for c in data.pop("format"))
        ids, rows, vocab = data.pop(_IDS), data.pop(_ROWS), int(data.pop("vocab_size"))
    except Exception as err:  # lzma, unpickling or a missing entry: all mean a bad file
        raise ToyWeightsError(f"{path} is not a packed toy CLIP file ({type(err).__name__}: {err}).") from err
    if fmt != _FORMAT:
        raise ToyWeightsError(f"{path} has format {fmt!r}; this version reads {_FORMAT!r}.")
    table = torch.zeros(vocab, rows.shape[1], dtype=torch.float32)
    table[ids] = rows.float()
    out = {k: v.float() if v.is_floating_point() else v for k, v in data.items()}
    out["token_embedding.weight"] = table
    return out


def shipped_state_dict() -> Dict[str, torch.Tensor]:
    """The state dict of the toy CLIP shipped with the package (hash checked)."""
    return unpack(SHIPPED_FILE, SHIPPED_SHA256)
