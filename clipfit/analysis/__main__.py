"""``python -m clipfit.analysis {changes,grads,tsne,importance} ...``: see ``--help`` of each."""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from clipfit.checkpoint_files import CheckpointError
from clipfit.methods.clip_loader import CLIPWeightsNotFoundError
from .runs import RunError

RUN_HELP = ("a run's output folder (with config.yaml and <model>/model.pth.tar-N), its model folder, "
            "or a checkpoint file")
USER_ERRORS = (RunError, CheckpointError, CLIPWeightsNotFoundError, FileNotFoundError, ValueError)


def _out(p: argparse.ArgumentParser, several: bool) -> None:
    """The ``--out`` option of every subcommand; with several runs there is no default folder."""
    default = "<run>/analysis; required with several runs" if several else "<run>/analysis"
    p.add_argument("--out", default="", metavar="DIR", help=f"output folder (default: {default})")


def _common(p: argparse.ArgumentParser, several: bool) -> None:
    """Options every checkpoint-reading subcommand shares."""
    _out(p, several)
    p.add_argument("--clip", default="", metavar="PATH",
                   help="pre-trained CLIP weights to compare with (default: the run's MODEL.BACKBONE.PATH, "
                        "else the clip download cache for its backbone)")
    p.add_argument("--load-epoch", type=int, default=None, metavar="N",
                   help="analyse model.pth.tar-N (default: the latest checkpoint)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m clipfit.analysis",
        description="What fine-tuning changed in CLIP: the analyses of the CLIPFit paper (section 4.3, "
                    "appendix H) on your own runs.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")

    p = sub.add_parser(
        "changes", help="squared change ||p_pre - p||^2 of each tuned layer (PNG + CSV)",
        description="Per layer, the squared change ||p_pre - p||^2 of the tuned text biases and image "
                    "LayerNorm gains and biases against pre-trained CLIP (paper Figures 3, 7). Several runs "
                    "(e.g. with and without the regulariser) are drawn on one figure (Figures 4b, 8-10). "
                    "Writes changes.png and changes.csv.",
    )
    p.add_argument("runs", nargs="+", metavar="CKPT_DIR", help=RUN_HELP)
    p.add_argument("--labels", nargs="+", default=[], metavar="LABEL",
                   help="legend label of each run (default: the shortest distinct path endings)")
    p.add_argument("--log-y", action="store_true", help="logarithmic y axis")
    _common(p, several=True)

    p = sub.add_parser(
        "grads", help="plot gradient statistics recorded with TRAINER.CLIPFIT.LOG_GRAD_STATS",
        description="Plots <run>/grad_stats.pt, which training writes when TRAINER.CLIPFIT.LOG_GRAD_STATS is "
                    "True: the squared gradient sum of each tuned layer over training (paper Figures 4a, 11a) "
                    "and the change of the first layer of each kind at each iteration (Figure 11b). Writes "
                    "grads.png, grads_layers.csv and grads_iterations.csv.",
    )
    p.add_argument("run", metavar="RUN_DIR", help="the run's output folder (holding grad_stats.pt)")
    _out(p, several=False)
    p.add_argument("--log-y", action="store_true", help="logarithmic y axes")

    p = sub.add_parser(
        "tsne", help="t-SNE of image features, zero-shot CLIP vs the fine-tuned model (PNG)",
        description="Encodes a split of the run's dataset (rebuilt from its config.yaml) with the pre-trained "
                    "and with the fine-tuned image encoder and draws a t-SNE of each side by side (paper "
                    "Figure 5), with the classes' silhouette score in feature space. Writes tsne_<split>.png "
                    "and tsne_<split>.csv (the 2-D points).",
    )
    p.add_argument("run", metavar="RUN_DIR", help=RUN_HELP)
    p.add_argument("--split", choices=("train", "val", "test"), default="test",
                   help="which split to encode (train: the run's few-shot images; default: test)")
    p.add_argument("--max-images", type=int, default=2000, metavar="N",
                   help="use at most N images, a seeded random subset (0: all; default: 2000)")
    p.add_argument("--perplexity", type=float, default=0.0,
                   help="t-SNE perplexity (default: 30, or (N-1)/3 for small N)")
    p.add_argument("--seed", type=int, default=0, help="seed of the image subset and of t-SNE (default: 0)")
    p.add_argument("--root", default="", help="dataset root, if it moved since training (default: the run's)")
    p.add_argument("--subsample", choices=("all", "base", "new"), default="",
                   help="classes to show (default: the run's DATASET.SUBSAMPLE_CLASSES)")
    p.add_argument("--device", default="", help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--label", default="", help="title of the fine-tuned panel (default: the run folder)")
    _common(p, several=False)

    p = sub.add_parser(
        "importance", help="rank blocks by change; write configs tuning only the top-k / bottom-k",
        description="The layer-importance protocol of the paper (section 4.3, appendix H): ranks each "
                    "encoder's residual blocks by their squared change in finished runs (averaged over the "
                    "runs given), and writes, per k, the variants tuning only the top-k or bottom-k blocks "
                    "through TRAINER.CLIPFIT.TEXT_LAYERS / IMAGE_LAYERS (the other encoder as in the base "
                    "config). Block indices are those of the keys: residual blocks 0..L-1; an image block "
                    "holds ln_1 and ln_2, and ln_pre / ln_post cannot be selected alone. Writes "
                    "importance.csv and variants.csv (with the opts of each variant) and, with "
                    "--base-config, one trainer config per variant for the scripts' CFG.",
    )
    p.add_argument("runs", nargs="+", metavar="CKPT_DIR", help=RUN_HELP + " (e.g. the seeds of one setting)")
    p.add_argument("--k", nargs="+", type=int, default=[1, 3], help="block counts (default: 1 3)")
    p.add_argument("--base-config", default="", metavar="YAML",
                   help="trainer config the variants start from, e.g. configs/trainers/CLIPFit/vit_b16.yaml; "
                        "variant configs are named <base>_<encoder>_<top|bottom><k>.yaml")
    p.add_argument("--config-dir", default="", metavar="DIR",
                   help="where the variant configs go (default: the base config's folder, so CFG=<name> "
                        "selects them in the scripts)")
    p.add_argument("--force", action="store_true", help="overwrite variant configs that differ")
    p.add_argument("--labels", nargs="+", default=[], metavar="LABEL", help="names of the runs in messages")
    _common(p, several=True)
    return parser


def _importance(args: argparse.Namespace) -> List[str]:
    from .importance import run_importance

    files, variants, notes = run_importance(
        args.runs, args.out, args.k, args.base_config, args.config_dir, args.force, args.labels, args.clip,
        args.load_epoch,
    )
    for v in variants:
        how = (f"CFG={v.name} bash scripts/<script>.sh ..." if v.config
               else f"OUT=output/{v.name} bash scripts/<script>.sh ... {v.opts}")
        print(f"{v.name:32s} {v.encoder:5s} blocks {v.blocks:20s} {how}")
    for note in notes:
        print(f"note: {note}")
    return files


def _run(args: argparse.Namespace) -> List[str]:
    if args.command == "changes":
        from .changes import run_changes

        return run_changes(args.runs, args.out, args.labels, args.clip, args.load_epoch, args.log_y)
    if args.command == "grads":
        from .grads import run_grads

        return run_grads(args.run, args.out, args.log_y)
    if args.command == "tsne":
        from .tsne import run_tsne

        return run_tsne(args.run, args.out, args.split, args.max_images, args.perplexity, args.seed, args.clip,
                        args.root, args.subsample, args.load_epoch, args.device, args.label)
    return _importance(args)


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        files = _run(args)
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for path in files:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
