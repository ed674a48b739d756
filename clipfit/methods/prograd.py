"""ProGrad (Zhu et al., ICCV 2023): CoOp whose gradient never opposes the zero-shot "general knowledge".

Two losses on the CoOp student's logits ``s`` and zero-shot CLIP's ``z`` (the frozen model
with ProGrad's hand-crafted prompt, the same image features):

    xe = CE(s, y)        kl = T^2 * mean_i sum_k -softmax(z/T)_ik log softmax(s/T)_ik

Per learned tensor, with ``g = grad xe`` and ``d = grad kl``: when ``cos(g, d) < 0`` the
update uses ``g - lambda (g . d/|d|) d/|d|`` (the part of ``g`` against ``d`` removed; ``lambda``
1 removes all of it), else ``g`` itself. Keys: ``TRAINER.PROGRAD.{LAMBDA, T}`` and CoOp's
``TRAINER.COOP.*`` for the prompt. With ``TRAINER.COOP.CTX_INIT "template"`` the context
starts as ProGrad's code starts it: zeros, then the embeddings of the dataset's prompt
words in front of the class name (its word count taken in BPE tokens, as its code does).
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from yacs.config import CfgNode

from clipfit.methods.classifier import LossParts
from clipfit.methods.coop import CoOpModel
from clipfit.methods.losses import classification_loss, cosine_logits
from clipfit.methods.options import PROGRAD_TEMPLATE_INIT, ProGradSettings, PromptSettings, from_node
from clipfit.methods.prompt_learner import CFG_PREFIX as COOP_PREFIX, PromptLearner
from clipfit.methods.text import class_text_features, tokenize
from clipfit.errors import ConfigValueError

CFG_PREFIX = "TRAINER.PROGRAD."
# ProGrad's hand-crafted prompts (its trainers/prograd.py), used by the teacher and for "template"
PROGRAD_TEMPLATES: Dict[str, str] = {
    "OxfordPets": "a type of pet, a photo of a {}.",
    "OxfordFlowers": "a type of flower, a photo of a {}.",
    "FGVCAircraft": "a type of aircraft, a photo of a {}.",
    "DescribableTextures": "a texture of {}.",
    "EuroSAT": "a centered satellite photo of {}.",
    "Food101": "a type of food, a photo of {}.",
    "UCF101": "a photo of a person doing {}.",
}
DEFAULT_TEMPLATE = "a photo of a {}."


def prograd_template(dataset: str) -> str:
    return PROGRAD_TEMPLATES.get(dataset, DEFAULT_TEMPLATE)


def soft_cross_entropy(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """ProGrad's ``kl`` term: ``T^2 * mean_i sum_k -p_teacher log p_student`` at temperature ``T`` (fp32)."""
    t = float(temperature)
    target = F.softmax(teacher.float() / t, dim=-1)
    return (-target * F.log_softmax(student.float() / t, dim=-1) * t * t).sum(1).mean()


def project_gradients(grads: Sequence[torch.Tensor], general: Sequence[torch.Tensor], lam: float) -> List[torch.Tensor]:
    """Per tensor: ``g - lam (g . d^) d^`` where ``cos(g, d) < 0`` (``d^ = d / |d|``), else ``g``."""
    out = []
    for g, d in zip(grads, general):
        d_unit = d / torch.linalg.norm(d)
        if torch.dot((g / torch.linalg.norm(g)).flatten(), d_unit.flatten()) < 0:
            g = g - lam * torch.dot(g.flatten(), d_unit.flatten()) * d_unit
        out.append(g)
    return out


class ProGradPromptLearner(PromptLearner):
    """CoOp's prompt learner; ``CTX_INIT "template"`` starts from ProGrad's dataset prompt."""

    def __init__(self, clip_model: nn.Module, classnames: Sequence[str], settings: PromptSettings, dataset: str):
        # read by make_context during PromptLearner.__init__ (a plain attribute may precede it)
        self.template_phrase = prograd_template(dataset).replace(" {}.", "").replace("_", " ")
        super().__init__(clip_model, classnames, settings)

    def make_context(self, embedding: nn.Embedding, s: PromptSettings, n_cls: int, context_length: int
                     ) -> Tuple[torch.Tensor, str]:
        if s.ctx_init != PROGRAD_TEMPLATE_INIT:
            return PromptLearner.make_context(embedding, s, n_cls, context_length)
        phrase = self.template_phrase
        n_words = len(phrase.split(" "))
        if s.n_ctx < n_words:
            raise ConfigValueError(f"{COOP_PREFIX}N_CTX is {s.n_ctx}, fewer than the {n_words} words of ProGrad's "
                             f"prompt {phrase!r} ({COOP_PREFIX}CTX_INIT {PROGRAD_TEMPLATE_INIT!r}): use at least {n_words}.")
        ctx = torch.zeros(s.n_ctx, embedding.embedding_dim, dtype=embedding.weight.dtype, device=embedding.weight.device)
        with torch.no_grad():
            words = embedding(tokenize([phrase], context_length).tokens.to(embedding.weight.device))
            ctx[s.n_ctx - n_words:] = words[0, 1:1 + n_words]
        return ctx, " ".join(["X"] * (s.n_ctx - n_words) + [phrase])


class ProGradModel(CoOpModel):
    """CoOp student plus the zero-shot teacher's class features (computed once)."""

    def __init__(self, clip_model: nn.Module, classnames: Sequence[str], prompt: PromptSettings,
                 dataset: str = "", lam: float = ProGradSettings.lam, temperature: float = ProGradSettings.temperature,
                 update_image_ln: bool = False):
        if update_image_ln:
            raise ConfigValueError("TRAINER.UPDATE_IMAGE_LN is True, but ProGrad's teacher shares the frozen image "
                             "encoder with the student: +UL is not available for ProGrad.")
        if not 0.0 <= lam <= 1.0:
            raise ConfigValueError(f"{CFG_PREFIX}LAMBDA is {lam}; it must lie in [0, 1] (1: ProGrad, 0: CoOp).")
        if not temperature > 0:
            raise ConfigValueError(f"{CFG_PREFIX}T is {temperature}; it must be > 0.")
        self.template = prograd_template(dataset)
        teacher = class_text_features(clip_model, self.template, classnames)  # before any tuning
        learner = ProGradPromptLearner(clip_model, classnames, prompt, dataset)
        super().__init__(clip_model, classnames, prompt, False, learner)
        self.lam, self.temperature = float(lam), float(temperature)
        self.register_buffer("teacher_features", teacher, persistent=False)

    @classmethod
    def from_cfg(cls, clip_model: nn.Module, classnames: Sequence[str], cfg: CfgNode) -> "ProGradModel":
        return cls(clip_model, classnames, prompt=PromptSettings.from_cfg(cfg.TRAINER.COOP), dataset=cfg.DATASET.NAME,
                   **from_node(ProGradSettings, cfg.TRAINER.PROGRAD), update_image_ln=bool(cfg.TRAINER.UPDATE_IMAGE_LN))

    def losses(self, images: torch.Tensor, labels: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(xe, kl, student logits)`` of a batch."""
        features = self.image_features(images)
        student = cosine_logits(features, self.class_text_features(), self.clip.logit_scale)
        with torch.no_grad():
            teacher = cosine_logits(features, self.teacher_features, self.clip.logit_scale)
        return classification_loss(student, labels), soft_cross_entropy(student, teacher, self.temperature), student

    def loss(self, images: torch.Tensor, labels: torch.Tensor) -> Tuple[torch.Tensor, LossParts]:
        """``xe`` as the loss; parts ``logits`` (detached) and ``kl_loss`` with its graph, since
        the gradient of ``xe`` is projected against its gradient (:meth:`projected_gradients`)."""
        xe, kl, logits = self.losses(images, labels)
        return xe, {"logits": logits.detach(), "kl_loss": kl}

    def projected_gradients(self, xe: torch.Tensor, kl: torch.Tensor) -> List[torch.Tensor]:
        """Gradients of the learned tensors (in :meth:`learned_parameters` order): of ``xe``,
        projected against those of ``kl`` (pass both scaled alike under loss scaling)."""
        params = list(self.learned_parameters().values())
        general = torch.autograd.grad(kl, params, retain_graph=True)
        return project_gradients(torch.autograd.grad(xe, params), general, self.lam)

    def method_lines(self) -> List[str]:
        return super().method_lines() + [
            f"Zero-shot teacher template: {self.template!r}",
            f"ProGrad: lambda {self.lam}, T {self.temperature} ({CFG_PREFIX}LAMBDA, {CFG_PREFIX}T)",
        ]
