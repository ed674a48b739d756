"""CoOp's learnable prompt: context vectors placed around each class name's tokens.

Each class prompt is ``[SOS] [V]_1 ... [V]_M [CLASS] . [EOT]`` (``end``), with the class
tokens moved to the middle of the context (``middle``) or before it (``front``). The
context is shared by all classes or, with ``csc``, one per class. It starts either from
N(0, 0.02) or from the token embeddings of a phrase ("a photo of a"), in which case the
prompt is exactly the hand-crafted ``"a photo of a {class}."`` before training.

The output feeds :func:`clipfit.methods.text.encode_embeddings`, so prompts are cut after the
last EOT like every other text path of the project.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from clipfit.methods.backbone import backbone
from clipfit.methods.options import PromptSettings
from clipfit.methods.templates import class_prompts
from clipfit.methods.text import TokenizedPrompts, tokenize
from clipfit.errors import ConfigValueError

POSITIONS = ("end", "middle", "front")
CFG_PREFIX = "TRAINER.COOP."
INIT_STD = 0.02  # CoOp's random initialisation


def _class_order(position: str, n_ctx: int, name_lens: Sequence[int], length: int) -> Optional[torch.Tensor]:
    """Per class, where each prompt position is read from in the ``end`` layout.

    The ``end`` layout is ``SOS, ctx(n_ctx), name(len_i), rest``; ``front`` reads
    ``SOS, name, ctx, rest`` and ``middle`` ``SOS, ctx[:n_ctx//2], name, ctx[n_ctx//2:], rest``.
    ``None`` for ``end`` (nothing moves).
    """
    if position == "end":
        return None
    half = n_ctx // 2 if position == "middle" else 0
    rows = []
    for m in name_lens:
        ctx = list(range(1, 1 + n_ctx))
        name = list(range(1 + n_ctx, 1 + n_ctx + m))
        rest = list(range(1 + n_ctx + m, length))
        rows.append([0] + ctx[:half] + name + ctx[half:] + rest)
    return torch.tensor(rows, dtype=torch.long)


def _initial_context(
    embedding: nn.Embedding, s: PromptSettings, n_cls: int, context_length: int
) -> Tuple[torch.Tensor, str]:
    """The initial context vectors (``[n_ctx, width]``, or ``[n_cls, n_ctx, width]`` with CSC)
    and the words they stand for ("X X ..." when random)."""
    device, dtype = embedding.weight.device, embedding.weight.dtype
    phrase = s.ctx_init.replace("_", " ").strip()
    if phrase:
        init = tokenize([phrase], context_length)
        n_ctx = int(init.eot[0]) - 1  # the phrase's BPE tokens decide the length
        if n_ctx < 1:
            raise ConfigValueError(f"{s.key_prefix}CTX_INIT {s.ctx_init!r} has no tokens; give words such as 'a photo of a'.")
        with torch.no_grad():
            ctx = embedding(init.tokens.to(device))[0, 1:1 + n_ctx].clone()
        if s.csc:  # every class starts from the phrase (CoOp ignores CSC when CTX_INIT is set)
            ctx = ctx.unsqueeze(0).repeat(n_cls, 1, 1)
        return ctx, phrase
    if s.n_ctx < 1:
        raise ConfigValueError(f"{s.key_prefix}N_CTX is {s.n_ctx}; use at least 1 context vector.")
    shape = (n_cls, s.n_ctx, embedding.embedding_dim) if s.csc else (s.n_ctx, embedding.embedding_dim)
    ctx = torch.empty(shape, dtype=dtype)  # drawn by the CPU generator, as CoOp does before .cuda()
    nn.init.normal_(ctx, std=INIT_STD)
    return ctx.to(device), " ".join(["X"] * s.n_ctx)


def _tokenize_prompts(prompts: List[str], context_length: int, n_ctx: int, key_prefix: str) -> TokenizedPrompts:
    """:func:`clipfit.methods.text.tokenize`, with an error naming the keys when a prompt is too long."""
    try:
        return tokenize(prompts, context_length)
    except RuntimeError as err:  # clip.tokenize: a prompt longer than the context
        raise ConfigValueError(
            f"{err}. The context ({n_ctx} tokens, {key_prefix}N_CTX or CTX_INIT) plus the "
            f"longest class name exceed CLIP's {context_length} tokens: use fewer context tokens."
        ) from err


class PromptLearner(nn.Module):
    """Learnable context vectors ``ctx`` and the fixed token embeddings around them.

    ``forward()`` returns the prompt embeddings ``[K, L, width]``; ``self.eot`` holds
    each prompt's EOT position (``L`` = last EOT + 1).
    """

    def __init__(self, clip_model: nn.Module, classnames: Sequence[str], settings: Optional[PromptSettings] = None):
        super().__init__()
        s = settings or PromptSettings()
        if s.position not in POSITIONS:
            raise ConfigValueError(
                f"{s.key_prefix}CLASS_TOKEN_POSITION is {s.position!r}; choose one of {', '.join(POSITIONS)}."
            )
        text = backbone(clip_model).text
        refused = text.prompt_support()
        if refused:
            raise ConfigValueError(f"Learned prompts ({s.key_prefix}*) are not defined on this backbone: "
                                   f"{refused}. Use CLIPFit, CLIP-Adapter, Tip-Adapter or zero-shot CLIP on it.")
        embedding, context_length = text.token_embedding, text.context_length
        ctx, phrase = self.make_context(embedding, s, len(classnames), context_length)
        self.ctx = nn.Parameter(ctx)
        self.n_cls, self.n_ctx, self.csc, self.position = len(classnames), ctx.shape[-2], s.csc, s.position
        self.requested_n_ctx, self.initial_context, self.key_prefix = s.n_ctx, phrase, s.key_prefix

        names = class_prompts("{}", classnames)
        prompts = _tokenize_prompts([f"{phrase} {name}." for name in names], context_length, self.n_ctx, s.key_prefix)
        with torch.no_grad():
            tokens = embedding(prompts.tokens.to(embedding.weight.device))
        self.register_buffer("token_prefix", tokens[:, :1].clone(), persistent=False)  # SOS
        self.register_buffer("token_suffix", tokens[:, 1 + self.n_ctx:].clone(), persistent=False)  # name . EOT
        self.register_buffer("eot", prompts.eot.to(tokens.device), persistent=False)
        name_lens = (tokenize(names, context_length).eot - 1).tolist()
        order = _class_order(s.position, self.n_ctx, name_lens, prompts.tokens.shape[1])
        self.register_buffer("order", None if order is None else order.to(tokens.device), persistent=False)

    @staticmethod
    def make_context(embedding: nn.Embedding, s: PromptSettings, n_cls: int, context_length: int
                        ) -> Tuple[torch.Tensor, str]:
        """The initial context and the words standing for it in the tokenised prompts (subclasses
        may start otherwise)."""
        return _initial_context(embedding, s, n_cls, context_length)

    def forward(self) -> torch.Tensor:
        """Prompt embeddings ``[n_cls, L, width]`` in the dtype of the fixed token embeddings."""
        ctx = self.ctx.to(self.token_prefix.dtype)
        if ctx.dim() == 2:
            ctx = ctx.unsqueeze(0).expand(self.n_cls, -1, -1)
        prompts = torch.cat([self.token_prefix, ctx, self.token_suffix], dim=1)
        if self.order is None:
            return prompts
        return prompts.gather(1, self.order.unsqueeze(-1).expand(-1, -1, prompts.shape[-1]))

    def describe(self) -> List[str]:
        """Log lines in CoOp's words."""
        lines = [
            "Initializing class-specific contexts" if self.csc else "Initializing a generic context",
            f'Initial context: "{self.initial_context}"',
            f"Number of context words (tokens): {self.n_ctx}",
            f"Class token position: {self.position}",
        ]
        if self.requested_n_ctx != self.n_ctx:
            lines.append(
                f"Note: {self.key_prefix}N_CTX {self.requested_n_ctx} is ignored: the {self.n_ctx} tokens of "
                f"{self.key_prefix}CTX_INIT decide the context length (as in CoOp)"
            )
        return lines
