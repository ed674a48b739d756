"""Fabricated data and weights for trying the scripts without downloads.

    python -m clipfit.testing make dtd eurosat --root DATA       # CoOp layouts, tiny images
    python -m clipfit.testing tiny-clip --out tiny_clip.pt       # a random CLIP, 32 px
    python -m clipfit.testing suite-stats                        # run the tests, write the count

Then, for example::

    DATA=DATA bash scripts/base2new_train.sh dtd 1 MODEL.BACKBONE.PATH tiny_clip.pt \\
        INPUT.SIZE "(32, 32)" OPTIM.MAX_EPOCH 2

The images are noise and the CLIP is random: accuracies are near chance. They exercise the
code paths, not the method. For real learning effects on a CPU, the recommended way is the
toy world: ``python -m clipfit.toyworld make-data --root DATA``, then the scripts on
``toy_shapes`` (its configs use the shipped toy CLIP, ``MODEL.BACKBONE.NAME toy``).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import List, Optional

from clipfit import REPO_ROOT
from clipfit.testing import suite_stats
from clipfit.testing.fake_datasets import make_dataset, supported_datasets
from clipfit.testing.tiny_clip import TINY_IMAGE_SIZE, save_tiny_clip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m clipfit.testing", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    sub = parser.add_subparsers(dest="command", required=True)
    make = sub.add_parser("make", help="fabricate datasets in CoOp's layout under --root")
    make.add_argument("datasets", nargs="+", metavar="DATASET",
                      help=f"config names: {', '.join(supported_datasets())}")
    make.add_argument("--root", required=True, help="data root (train.py's --root, the scripts' DATA)")
    make.add_argument("--classes", type=int, help="classes per dataset (default 4; 6 for "
                      "Caltech101 and the ImageNet family)")
    make.add_argument("--per-class", type=int, default=10, help="images per class (default 10)")
    make.add_argument("--image-size", type=int, default=TINY_IMAGE_SIZE,
                      help=f"image side in pixels (default {TINY_IMAGE_SIZE})")
    tiny = sub.add_parser("tiny-clip", help="write a small random CLIP in OpenAI's format")
    tiny.add_argument("--out", required=True, help="file to write (MODEL.BACKBONE.PATH)")
    tiny.add_argument("--format", choices=("state_dict", "jit"), default="state_dict")
    tiny.add_argument("--seed", type=int, default=0)
    stats = sub.add_parser("suite-stats", help="run the test suite and write its count and time "
                           "into the docs page that shows them")
    stats.add_argument("paths", nargs="*", default=["tests"], help="test paths (default: tests)")
    stats.add_argument("--page", default=os.path.join(REPO_ROOT, "docs", "benchmarks.md"),
                       help="Markdown page holding the '<!-- begin: suite -->' block "
                            "(default: docs/benchmarks.md)")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "suite-stats":
        return suite_stats.main(args.paths, args.page)
    if args.command == "make":
        unknown = [d for d in args.datasets if d not in supported_datasets()]
        if unknown:
            parser.error(f"unknown dataset {', '.join(unknown)}; choose from {', '.join(supported_datasets())}")
        for name in args.datasets:
            try:
                folder = make_dataset(name, args.root, n_classes=args.classes,
                                      per_class=args.per_class, image_size=args.image_size)
            except FileExistsError as err:
                print(f"ERROR: {err}", file=sys.stderr)
                return 2
            print(f"{name}: {folder}")
        return 0
    path = save_tiny_clip(args.out, fmt=args.format, seed=args.seed)
    print(f"Tiny CLIP ({TINY_IMAGE_SIZE} px) written to {os.path.abspath(path)}. Use it with "
          f"MODEL.BACKBONE.PATH {path} INPUT.SIZE \"({TINY_IMAGE_SIZE}, {TINY_IMAGE_SIZE})\"")
    return 0


if __name__ == "__main__":
    sys.exit(main())
