"""The layer-importance protocol of the paper's section 4.3 and appendix H.

Rank the residual blocks of each encoder by how much a finished run changed them (the
sum of ``||p_pre - p||^2`` over the block's tuned tensors, averaged over the given runs),
then write one trainer config per variant that tunes only the top-k or bottom-k blocks
through ``TRAINER.CLIPFIT.TEXT_LAYERS`` / ``IMAGE_LAYERS``; the other encoder keeps the
base config's setting. Blocks are indexed as those keys index them (``clipfit.methods.params``):
text residual blocks 0..L-1; image ViT residual blocks 0..L-1 (each holds ``ln_1`` and
``ln_2``) or ResNet bottlenecks in forward order. ``ln_pre`` and ``ln_post`` lie outside
the blocks: they are listed in the ranking but no block list selects them (a non-empty
``IMAGE_LAYERS`` freezes them).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import yaml

from clipfit.fileio import write_text
from clipfit.methods.clip_loader import architecture
from clipfit.methods.params import select_parameters
from .changes import ChangeRow, change_rows
from .runs import PretrainedCLIPs, Run, RunError, load_runs, output_dir
from .tables import write_rows_csv

KEYS = {"text": "TRAINER.CLIPFIT.TEXT_LAYERS", "image": "TRAINER.CLIPFIT.IMAGE_LAYERS"}


@dataclass
class LayerRank:
    """One block (or a tensor outside the blocks) of one encoder (a row of ``importance.csv``)."""

    encoder: str
    block: str  # block index as TEXT_LAYERS/IMAGE_LAYERS take it; "" outside the blocks
    tensors: str  # the block's tuned tensors, ";"-separated
    sq_change: float  # summed over the tensors, averaged over the runs
    rank: str  # 1 = most changed block of the encoder; "" for tensors outside the blocks


@dataclass
class Variant:
    """A run to make: tune only ``blocks`` of ``encoder`` (a row of ``variants.csv``)."""

    name: str
    encoder: str
    which: str  # "top" or "bottom"
    k: int
    blocks: str  # e.g. "[0, 1, 2]"
    opts: str  # the same as train.py / script opts
    config: str  # the written trainer config ("" without --base-config)


def n_blocks(model: torch.nn.Module, encoder: str) -> int:
    """Residual blocks of an encoder (ResNet: bottlenecks of all stages)."""
    arch = architecture(model)
    layers = arch["text_layers"] if encoder == "text" else arch["vision_layers"]
    return layers if isinstance(layers, int) else sum(int(n) for n in str(layers).split("-"))


def block_of_tensors(model: torch.nn.Module, settings: Dict[str, object]) -> Dict[str, int]:
    """Tensor name -> the block index under which the run's parameter selection tunes it."""
    text, image = settings["TRAINER.CLIPFIT.TEXT_PARAMS"], settings["TRAINER.CLIPFIT.IMAGE_PARAMS"]
    out = {}
    for encoder in ("text", "image"):
        for i in range(n_blocks(model, encoder)):
            layers = {f"{encoder}_layers": [i]}
            out.update({name: i for name in select_parameters(model, text, image, **layers).groups[encoder]})
    return out


def _check_same_selection(runs: Sequence[Run]) -> Dict[str, object]:
    first = runs[0]
    if "TRAINER.CLIPFIT.TEXT_PARAMS" not in first.meta["settings"]:
        raise RunError(
            f"{first.checkpoint_path} was not trained by CLIPFit (trainer {first.meta['info'].get('trainer')}): "
            "the importance protocol selects layers through TRAINER.CLIPFIT.TEXT_LAYERS/IMAGE_LAYERS."
        )
    for run in runs[1:]:
        if run.meta["settings"] != first.meta["settings"] or set(run.tuned) != set(first.tuned):
            raise RunError(
                f"Runs {first.label} and {run.label} tune different tensors ({first.meta['settings']} vs "
                f"{run.meta['settings']}): rank runs of one parameter selection (e.g. seeds of one setting)."
            )
    return first.meta["settings"]


def rank_layers(rows: Sequence[ChangeRow], blocks: Dict[str, int], n_runs: int) -> List[LayerRank]:
    """Per encoder, blocks by decreasing change; then tensors outside the blocks."""
    groups: Dict[Tuple[str, Optional[int]], List[ChangeRow]] = {}
    for r in rows:
        groups.setdefault((r.encoder, blocks.get(r.tensor)), []).append(r)
    out = []
    for encoder in ("text", "image"):
        inside = [(b, g) for (e, b), g in groups.items() if e == encoder and b is not None]
        inside.sort(key=lambda bg: (-sum(r.sq_change for r in bg[1]), bg[0]))
        for rank, (block, g) in enumerate(inside, 1):
            out.append(LayerRank(encoder, str(block), _names(g), sum(r.sq_change for r in g) / n_runs, str(rank)))
        outside: Dict[str, List[ChangeRow]] = {}
        for r in groups.get((encoder, None), []):
            outside.setdefault(r.label, []).append(r)
        for g in outside.values():
            out.append(LayerRank(encoder, "", _names(g), sum(r.sq_change for r in g) / n_runs, ""))
    return out


def _names(rows: Sequence[ChangeRow]) -> str:
    return ";".join(dict.fromkeys(r.tensor for r in rows))


def make_variants(ranking: Sequence[LayerRank], ks: Sequence[int], prefix: str) -> Tuple[List[Variant], List[str]]:
    """Top-k and bottom-k variants per encoder, and notes on the k values left out."""
    variants, notes = [], []
    for encoder in ("text", "image"):
        ordered = [int(r.block) for r in ranking if r.encoder == encoder and r.rank]
        if not ordered:
            continue
        for k in ks:
            if not 0 < k < len(ordered):
                notes.append(f"k={k} skipped for the {encoder} encoder: it has {len(ordered)} tuned blocks "
                             f"(k must be 1..{len(ordered) - 1}).")
                continue
            for which, chosen in (("top", ordered[:k]), ("bottom", ordered[-k:])):
                blocks = str(sorted(chosen))
                variants.append(Variant(f"{prefix}{encoder}_{which}{k}", encoder, which, k, blocks,
                                        f'{KEYS[encoder]} "{blocks}"', ""))
    return variants, notes


def write_config(base_config: str, variant: Variant, directory: str, source: str, force: bool) -> str:
    """The base trainer config with the variant's block list; refuses to change an existing file."""
    with open(base_config) as f:
        data = yaml.safe_load(f) or {}
    node = data.setdefault("TRAINER", {}).setdefault("CLIPFIT", {})
    node[KEYS[variant.encoder].rsplit(".", 1)[1]] = [int(b) for b in yaml.safe_load(variant.blocks)]
    most = "most" if variant.which == "top" else "least"
    header = (f"# {os.path.basename(base_config)}, tuning only the {variant.k} {most} changed {variant.encoder} "
              f"blocks {variant.blocks},\n# ranked by `python -m clipfit.analysis importance` on {source}.\n")
    text = header + yaml.safe_dump(data, sort_keys=False)
    path = os.path.join(directory, variant.name + ".yaml")
    if os.path.isfile(path) and not force:
        with open(path) as f:
            if f.read() != text:
                raise RunError(f"{path} exists with other content (from another ranking?): pass --force "
                               "to overwrite it, or --config-dir to write elsewhere.")
    return write_text(path, text)


def run_importance(
    paths: Sequence[str], out_dir: str = "", ks: Sequence[int] = (1, 3), base_config: str = "",
    config_dir: str = "", force: bool = False, labels: Sequence[str] = (), clip_path: str = "",
    load_epoch: Optional[int] = None,
) -> Tuple[List[str], List[Variant], List[str]]:
    """The ``importance`` subcommand: ``importance.csv`` and ``variants.csv`` in ``out_dir`` (default
    ``<run>/analysis``) and, with a base config, one trainer config per variant in ``config_dir``
    (default: the base config's folder). Returns the files, the variants and notes."""
    runs = load_runs(paths, labels, load_epoch)
    out_dir = output_dir(out_dir, runs)
    settings = _check_same_selection(runs)
    clips = PretrainedCLIPs(clip_path)
    rows = change_rows(runs, clips)
    ranking = rank_layers(rows, block_of_tensors(clips.model(runs[0]), settings), len(runs))
    prefix = os.path.splitext(os.path.basename(base_config))[0] + "_" if base_config else ""
    variants, notes = make_variants(ranking, ks, prefix)
    if any(r.encoder == "image" and not r.rank for r in ranking):
        notes.append("ln_pre and ln_post (and a ResNet's stem and attention pool) lie outside the image "
                     "blocks: IMAGE_LAYERS cannot select them, and a non-empty IMAGE_LAYERS freezes them.")
    os.makedirs(out_dir, exist_ok=True)
    files = [write_rows_csv(ranking, os.path.join(out_dir, "importance.csv"))]
    if base_config:
        source = ", ".join(run.checkpoint_path for run in runs)
        directory = config_dir or os.path.dirname(base_config)
        for v in variants:
            v.config = write_config(base_config, v, directory, source, force)
        files += [v.config for v in variants]
    if variants:
        files.append(write_rows_csv(variants, os.path.join(out_dir, "variants.csv")))
    return files, variants, notes
