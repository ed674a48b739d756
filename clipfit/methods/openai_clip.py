"""The ``openai-clip`` package (imported as ``clip``): the only module that imports it.

``clip`` imports the deprecated ``pkg_resources``, whose warning would show on every run;
importing it once here, with that warning silenced, keeps it out of the logs. Everything
else takes CLIP's names from this module.
"""
import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from clip import clip as clip_api  # the module holding _MODELS, _download and tokenize
    from clip.model import CLIP, ModifiedResNet, build_model, convert_weights

__all__ = ["CLIP", "ModifiedResNet", "build_model", "clip_api", "convert_weights"]
