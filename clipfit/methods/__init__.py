"""The methods on a plain ``clip.model.CLIP``, without Dassl: CLIPFit, the prompt learners
(CoOp, KgCoOp), CLIP-Adapter, parameter selection, losses, the text path, prompt templates
and CLIP loading. Each is testable without a trainer.
"""
