"""The paper's five base-to-new findings, checked on a toy table (printed by the demo and the toy table).

Each finding compares means over seeds of finished runs (:func:`clipfit.toyworld.explain.base2new_means`)
and is printed as one check line with its numbers, e.g.
``2. CoOp New below zero-shot New: yes, 38.1 < 44.0``. A finding whose runs are missing says so
instead of guessing. The thresholds are the ones of issue 23 (see docs/toy-world.md).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Mapping, Optional

from clipfit.experiments.results import harmonic_mean

from .explain import method_label

ZERO_SHOT, COOP, CLIPFIT = "ZeroshotCLIP", "CoOp", "CLIPFit"
CLIPFIT_NO_REG = method_label(CLIPFIT, "toy_reg_none")
BASE_GAIN = 8.0  # finding 1: CLIPFit Base at least this many points above zero-shot Base
NEW_TOLERANCE = 2.0  # finding 3: CLIPFit New at most this many points below zero-shot New
KD_NEW_GAIN = 1.0  # finding 4: CLIPFit New at least this many points above CLIPFit REG none New
CHANCE_FACTOR = 3.0  # finding 5: zero-shot Base and New at least this many times chance

Means = Mapping[str, Mapping[str, float]]  # method label -> {"base": %, "new": %}


@dataclass(frozen=True)
class Finding:
    """One finding: whether it holds (None: its runs are missing) and the line that says so."""

    holds: Optional[bool]
    line: str


def _yes(holds: bool) -> str:
    return "yes" if holds else "NO"


def _hm(m: Mapping[str, float]) -> float:
    return harmonic_mean(m["base"], m["new"])


def _base_gain(m: Means) -> Finding:
    f, z = m[CLIPFIT]["base"], m[ZERO_SHOT]["base"]
    ok = f >= z + BASE_GAIN
    return Finding(ok, f"CLIPFit Base at least {BASE_GAIN:g} above zero-shot Base: {_yes(ok)}, "
                       f"{f:.1f} {'>=' if ok else '<'} {z:.1f} + {BASE_GAIN:g}")


def _coop_new_falls(m: Means) -> Finding:
    c, z = m[COOP]["new"], m[ZERO_SHOT]["new"]
    ok = c < z
    return Finding(ok, f"CoOp New below zero-shot New: {_yes(ok)}, {c:.1f} {'<' if ok else '>='} {z:.1f}")


def _clipfit_keeps_new(m: Means) -> Finding:
    f, z = m[CLIPFIT]["new"], m[ZERO_SHOT]["new"]
    hf, hc, hz = _hm(m[CLIPFIT]), _hm(m[COOP]), _hm(m[ZERO_SHOT])
    keeps, beats = f >= z - NEW_TOLERANCE, hf > hc and hf > hz
    return Finding(keeps and beats,
                   f"CLIPFit keeps New and has the best HM: {_yes(keeps and beats)}, New {f:.1f} "
                   f"{'>=' if keeps else '<'} {z:.1f} - {NEW_TOLERANCE:g}; HM {hf:.1f} vs CoOp {hc:.1f}, "
                   f"zero-shot {hz:.1f}")


def _kd_protects_new(m: Means) -> Finding:
    f, n = m[CLIPFIT]["new"], m[CLIPFIT_NO_REG]["new"]
    ok = f >= n + KD_NEW_GAIN
    return Finding(ok, f"KD protects New (CLIPFit vs REG none): {_yes(ok)}, {f:.1f} "
                       f"{'>=' if ok else '<'} {n:.1f} + {KD_NEW_GAIN:g}")


def _zero_shot_above_chance(m: Means, n_base: int, n_new: int) -> Finding:
    b, n = m[ZERO_SHOT]["base"], m[ZERO_SHOT]["new"]
    cb, cn = CHANCE_FACTOR * 100.0 / n_base, CHANCE_FACTOR * 100.0 / n_new
    ok = b >= cb and n >= cn
    return Finding(ok, f"Zero-shot at least {CHANCE_FACTOR:g}x chance: {_yes(ok)}, Base {b:.1f} vs {cb:.1f}, "
                       f"New {n:.1f} vs {cn:.1f}")


def check_findings(means: Means, n_base: int, n_new: int) -> List[Finding]:
    """The five findings on ``means`` (method label -> Base and New %), ``n_base``/``n_new`` classes."""
    if n_base < 1 or n_new < 1:
        raise ValueError(f"base and new need at least one class each, got {n_base} and {n_new}")
    checks: List[tuple] = [
        ((CLIPFIT, ZERO_SHOT), _base_gain),
        ((COOP, ZERO_SHOT), _coop_new_falls),
        ((CLIPFIT, COOP, ZERO_SHOT), _clipfit_keeps_new),
        ((CLIPFIT, CLIPFIT_NO_REG), _kd_protects_new),
        ((ZERO_SHOT,), lambda m: _zero_shot_above_chance(m, n_base, n_new)),
    ]
    out = []
    for i, (needs, check) in enumerate(checks, 1):
        missing = [k for k in needs if not {"base", "new"} <= set(means.get(k, {}))]
        finding = (Finding(None, f"not checked: no finished Base and New runs of {', '.join(missing)}")
                   if missing else check(means))
        out.append(Finding(finding.holds, f"{i}. {finding.line}"))
    return out


def finding_lines(means: Means, n_base: int, n_new: int) -> List[str]:
    """The check lines of :func:`check_findings`, then how many of the five hold."""
    findings = check_findings(means, n_base, n_new)
    return [f.line for f in findings] + [f"{held_of_checked(findings)} checked findings hold (of 5)."]


def held_of_checked(findings: List[Finding]) -> str:
    """``"H of C"``: how many of the findings hold, of those whose runs were there."""
    return f"{sum(f.holds is True for f in findings)} of {sum(f.holds is not None for f in findings)}"


METHOD_ORDER = (ZERO_SHOT, COOP, CLIPFIT, CLIPFIT_NO_REG)  # first in the side-by-side table; others follow sorted
FINDING_NAMES = (
    f"1. CLIPFit Base >= zero-shot Base + {BASE_GAIN:g}",
    "2. CoOp New < zero-shot New",
    f"3. CLIPFit New >= zero-shot New - {NEW_TOLERANCE:g}, best HM",
    f"4. CLIPFit New >= `REG none` New + {KD_NEW_GAIN:g}",
    f"5. zero-shot >= {CHANCE_FACTOR:g}x chance",
)


def _cell(m: Optional[Mapping[str, float]]) -> str:
    return "-" if m is None else f"{m['base']:.1f} / {m['new']:.1f} / {_hm(m):.1f}"


def _verdict(f: Finding) -> str:
    return "not checked" if f.holds is None else _yes(f.holds)


def side_by_side(tables: Mapping[str, Means], n_base: int, n_new: int) -> List[str]:
    """A Markdown table with one column per draw (label -> means): Base / New / HM per method, then the findings."""
    labels = list(tables)
    methods = [m for m in METHOD_ORDER if any(m in t for t in tables.values())]
    methods += sorted({m for t in tables.values() for m in t} - set(methods))
    checks = {label: check_findings(tables[label], n_base, n_new) for label in labels}
    lines = ["| Base / New / HM | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
    lines += [f"| {m} | " + " | ".join(_cell(tables[label].get(m)) for label in labels) + " |" for m in methods]
    lines += [f"| {name} | " + " | ".join(_verdict(checks[label][i]) for label in labels) + " |"
              for i, name in enumerate(FINDING_NAMES)]
    held = [held_of_checked(checks[label]) for label in labels]
    return lines + ["| findings that hold (of those checked) | " + " | ".join(held) + " |"]
