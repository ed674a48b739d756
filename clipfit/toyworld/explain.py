"""Two sentences that say what a toy base-to-new table shows (printed by ``scripts/demo.sh``).

The sentences are built from the numbers (means over seeds of finished runs), never written
in advance: what they claim is what the runs measured.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Dict, List, Tuple

from clipfit.experiments.results import find_runs, harmonic_mean

Means = Dict[str, Dict[str, float]]  # method label -> {"base": mean, "new": mean}
TOY_CFG = "toy"  # the config a trainer's label stands for alone; others are "<trainer> (<cfg>)"


def method_label(trainer: str, cfg: str) -> str:
    """``CLIPFit`` for ``CLIPFit/toy``, ``CLIPFit (toy_reg_none)`` for another config."""
    return trainer if cfg == TOY_CFG else f"{trainer} ({cfg})"


def base2new_means(root: str, dataset: str) -> Means:
    """Mean Base and New accuracy per method (trainer and config) over the finished seeds on ``dataset``."""
    values: Dict[Tuple[str, str], List[float]] = defaultdict(list)
    for key, run in find_runs(root).items():
        if key.setting == "base2new" and key.dataset == dataset and run.finished:
            values[(method_label(key.trainer, key.cfg), key.role)].append(run.accuracy)
    means: Means = defaultdict(dict)
    for (trainer, role), accs in values.items():
        means[trainer][role] = sum(accs) / len(accs)
    return {t: m for t, m in means.items() if set(m) == {"base", "new"}}


def _compare(a: float, b: float) -> str:
    return f"{abs(a - b):.1f} points {'above' if a >= b else 'below'}"


def explain(means: Means, method: str = "CLIPFit", reference: str = "ZeroshotCLIP") -> List[str]:
    """Two lines: what fine-tuning did to Base, and what it did to New (with the harmonic means)."""
    if method not in means or reference not in means:
        missing = [t for t in (method, reference) if t not in means]
        return [f"(no finished Base and New runs of {', '.join(missing)}: nothing to compare)"]
    m, z = means[method], means[reference]
    others = [t for t in sorted(means) if t not in (method, reference)]
    base_others = "".join(f"; {t} reaches {means[t]['base']:.1f}%" for t in others)
    new_others = "".join(f", {t} {means[t]['new']:.1f}%" for t in others)
    hm = {t: harmonic_mean(v["base"], v["new"]) for t, v in means.items()}
    best = max(hm, key=hm.get)
    return [
        f"Base (classes trained on): {method} {m['base']:.1f}% vs zero-shot {z['base']:.1f}%, "
        f"{_compare(m['base'], z['base'])}{base_others}.",
        f"New (classes never trained on): {method} {m['new']:.1f}%, {_compare(m['new'], z['new'])} "
        f"zero-shot ({z['new']:.1f}%){new_others}; best harmonic mean: {best} ({hm[best]:.1f}).",
    ]
