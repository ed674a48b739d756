"""Check a data root before training: ``python -m clipfit.data doctor --root DATA [--dataset dtd ...]``.

For every CoOp dataset found under --root (or each one named) it checks the folder tree and
the files the loader needs, the split file, the number of classes and images per split
against CoOp's published sizes, the images per class, that images open, and that the
few-shot caches pass the checks a run makes, and lists partial files left by interrupted
writes (also in the run folders given with --output-dir). It prints one line per problem with
its fix, then a summary table, and exits with status 1 when a problem was found. It writes
nothing (a missing split is made in memory only); --clean removes the partial files.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import random
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import yaml
from PIL import Image
from tabulate import tabulate

from clipfit import REPO_ROOT
from clipfit.data.fewshot import FEWSHOT_FOLDER, cache_problem, fewshot_sources
from clipfit.data.folders import CoOpDataset, FolderDataset
from clipfit.data.splits import DOCS, DatasetLayoutError
from clipfit.errors import UnknownNameError
from clipfit.fileio import FileContentError, leftover_temps, read_json
from clipfit.training.config import closest_key

# classes, train, val, test of CoOp's splits (CLIPFit paper, Table 8; variants: their papers)
PUBLISHED: Dict[str, Tuple[int, Optional[int], Optional[int], int]] = {
    "ImageNet": (1000, 1281167, None, 50000),
    "Caltech101": (100, 4128, 1649, 2465),
    "OxfordPets": (37, 2944, 736, 3669),
    "StanfordCars": (196, 6509, 1635, 8041),
    "OxfordFlowers": (102, 4093, 1633, 2463),
    "Food101": (101, 50500, 20200, 30300),
    "FGVCAircraft": (100, 3334, 3333, 3333),
    "SUN397": (397, 15880, 3970, 19850),
    "DescribableTextures": (47, 2820, 1128, 1692),
    "EuroSAT": (10, 13500, 5400, 8100),
    "UCF101": (101, 7639, 1898, 3783),
    "ImageNetV2": (1000, None, None, 10000),
    "ImageNetSketch": (1000, None, None, 50889),
    "ImageNetA": (200, None, None, 7500),
    "ImageNetR": (200, None, None, 30000),
}
FULL_SHOTS = 16  # the largest few-shot setting of the protocol
CACHE_FILE = re.compile(r"shot_(\d+)-seed_(-?\d+)\.json$")
MAX_LISTED = 20  # unreadable images listed one per line before the rest are counted


@dataclass
class Problem:
    dataset: str
    what: str
    fix: str

    def line(self) -> str:
        return f"[{self.dataset}] {self.what} Fix: {self.fix}"


@dataclass
class Report:
    dataset: str
    folder: str
    status: str = "ok"
    sizes: Tuple = ("", "", "", "")  # classes, train, val, test
    caches: int = 0
    checked: int = 0
    problems: List[Problem] = field(default_factory=list)

    def add(self, what: str, fix: str) -> None:
        self.problems.append(Problem(self.dataset, what, fix))


def import_loaders() -> None:
    """Register the loaders of the repository's ``datasets/`` package (it is not installed)."""
    if REPO_ROOT not in sys.path:
        sys.path.insert(0, REPO_ROOT)
    import datasets  # noqa: F401


def config_names() -> List[str]:
    """The dataset config names (``configs/datasets/<name>.yaml``)."""
    folder = os.path.join(REPO_ROOT, "configs", "datasets")
    return sorted(n[: -len(".yaml")] for n in os.listdir(folder) if n.endswith(".yaml"))


def known_datasets() -> List[str]:
    """The registry names of every loader with a folder of its own under the root: CoOp's in
    :data:`PUBLISHED`'s order, then the others (the toy world's)."""
    from clipfit.engine import DATASET_REGISTRY

    own = [
        n for n in DATASET_REGISTRY.registered_names()
        if issubclass(DATASET_REGISTRY.get(n), FolderDataset) and DATASET_REGISTRY.get(n).dataset_dir
    ]
    return [n for n in PUBLISHED if n in own] + sorted(n for n in own if n not in PUBLISHED)


def resolve_name(name: str) -> str:
    """A registry name from a registry name or a config name (``configs/datasets/<name>.yaml``)."""
    if name in known_datasets():
        return name
    if name in config_names():
        with open(os.path.join(REPO_ROOT, "configs", "datasets", f"{name}.yaml")) as f:
            return yaml.safe_load(f)["DATASET"]["NAME"]
    close = closest_key(name, config_names() + known_datasets())
    hint = f" Did you mean {close}?" if close else ""
    raise UnknownNameError(
        f"Unknown dataset {name!r}.{hint} Use a config name (dtd, oxford_pets, toy_shapes, ...) "
        f"or one of {', '.join(known_datasets())}."
    )


def one_line(error: Exception) -> str:
    """The problem part of a loader error, without the expected tree."""
    return " ".join(str(error).split("\nExpected layout")[0].split())


def load_splits(cls: type, cfg, report: Report) -> Tuple[Optional[Tuple[list, Optional[list], list]], bool]:
    """Train, val, test as the loader sees them, and whether they come from a saved split.

    A missing split file is reported and the split made in memory (not saved, and with the
    global random state restored), so that the rest can still be checked.
    """
    docs = f'{DOCS}, section "{cls.doc_section}"'
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            if issubclass(cls, CoOpDataset) and cls.split_file:
                loader = cls.__new__(cls)
                loader.locate(cfg)
                if not os.path.exists(loader.split_path):
                    report.add(
                        f"{loader.split_path} is missing: the first run will make a new random split, "
                        "not comparable with published results.",
                        f"download CoOp's {cls.split_file} into {loader.dataset_dir} (see {docs}).",
                    )
                    state = random.getstate()
                    try:
                        return loader.create_split(), False
                    finally:
                        random.setstate(state)
            dataset = cls(cfg)
    except (DatasetLayoutError, ValueError, KeyError, OSError) as e:
        report.add(one_line(e), f"see {docs}.")
        return None, False
    val = None if dataset.val is None or dataset.val is dataset.test else dataset.val
    train = None if dataset.train_x is dataset.test else dataset.train_x
    return (train, val, dataset.test), True


def check_sizes(report: Report, splits: Tuple, skip_counts: bool) -> None:
    """Classes and images per split against CoOp's, and classes too small or absent."""
    train, val, test = splits
    labels = {x.label for x in test} | {x.label for x in train or []}
    sizes = (len(labels),) + tuple(None if s is None else len(s) for s in splits)
    report.sizes = tuple("" if s is None else s for s in sizes)
    if not skip_counts and report.dataset in PUBLISHED:  # the toy world's have no published sizes
        names = ("classes", "train", "val", "test")
        differ = [
            f"{what} {have:,} (published {published:,})"
            for what, have, published in zip(names, sizes, PUBLISHED[report.dataset])
            if published is not None and have is not None and have != published
        ]
        if differ:
            report.add(
                f"sizes differ from the published ones: {', '.join(differ)}.",
                "use CoOp's split file and a complete copy of the dataset (or pass --skip-counts for a "
                "deliberate subset).",
            )
    if train is None:
        return
    names = {x.label: x.classname for x in train + test}
    per_class = Counter(x.label for x in train)
    short = sorted((n, names[y]) for y, n in per_class.items() if n < FULL_SHOTS)
    if short:
        listed = ", ".join(f"{name} ({n})" for n, name in short[:10])
        report.add(
            f"{len(short)} class(es) have fewer than {FULL_SHOTS} training images: {listed}.",
            f"add images; until then {FULL_SHOTS}-shot runs keep all the images these classes have.",
        )
    for part, items in (("val", val), ("test", test)):
        if items is not None:
            absent = sorted(names[y] for y in set(names) - {x.label for x in items})
            if absent:
                report.add(
                    f"class(es) without {part} images: {', '.join(absent[:10])}.",
                    "use CoOp's split file, or give every class some images in this split.",
                )


def check_images(report: Report, splits: Tuple, max_images: int) -> None:
    """Open (and decode) up to ``max_images`` images, spread over the dataset; 0 checks all."""
    paths = sorted({x.impath for items in splits if items is not None for x in items})
    if max_images and len(paths) > max_images:
        paths = paths[:: -(-len(paths) // max_images)]
    bad = []
    for path in paths:
        try:
            with Image.open(path) as image:
                image.load()
        except Exception as e:  # any decoding failure makes the image unusable for training
            bad.append((path, e))
    report.checked = len(paths)
    for path, e in bad[:MAX_LISTED]:
        report.add(
            f"unreadable image {path} ({type(e).__name__}: {e}).", "replace it from the original archive."
        )
    if len(bad) > MAX_LISTED:
        report.add(f"{len(bad) - MAX_LISTED} more unreadable images.", "extract the dataset again.")


def check_leftovers(report: Report, folders: Sequence[str], clean: bool, recursive: bool = False) -> None:
    """Temporary files of interrupted writes (``.<name>.<pid>.tmp`` of a process that is gone)
    in ``folders`` (and their subfolders if ``recursive``): listed, or removed with ``--clean``."""
    for path in (p for folder in folders for p in leftover_temps(folder, recursive=recursive)):
        if clean:
            os.remove(path)
            print(f"Removed {path}, a partial file left by an interrupted write.")
        else:
            report.add(f"{path} is a partial file left by an interrupted write.",
                       "delete it, or run the doctor again with --clean.")


def check_caches(report: Report, fewshot_dir: str, image_dir: str, splits: Tuple) -> None:
    """Every few-shot cache must pass the check a run makes before using it (see ``cache_problem``)."""
    if not os.path.isdir(fewshot_dir):
        return
    train, val, _ = splits
    fix = "delete it; the next run with these shots and seed samples again from the current split."
    for name in sorted(os.listdir(fewshot_dir)):
        path = os.path.join(fewshot_dir, name)
        match = CACHE_FILE.match(name)
        if not match or train is None:
            continue
        report.caches += 1
        shots, seed = int(match.group(1)), int(match.group(2))
        try:
            data = read_json(path, "Few-shot cache")
            problem = cache_problem(data, shots, seed, fewshot_sources(train, val, shots), image_dir, path)
        except (FileContentError, OSError) as e:
            problem = str(e).split(" Fix:")[0]
        if problem:
            report.add(f"{path}: {problem.rstrip('.')}.", fix)


def check_dataset(
    name: str, root: str, max_images: int = 200, skip_counts: bool = False, requested: bool = False,
    clean: bool = False,
) -> Report:
    """Check one dataset (registry name) under ``root``; an absent folder is a problem only if requested."""
    from clipfit.training.config import get_cfg
    from clipfit.engine import DATASET_REGISTRY

    cls = DATASET_REGISTRY.get(name)
    folder = os.path.join(os.path.abspath(os.path.expanduser(root)), cls.dataset_dir)
    report = Report(name, cls.dataset_dir + "/")
    if not os.path.isdir(folder):
        report.status = "absent"
        if requested:
            report.add(
                f"{folder} not found.", f'prepare it as {DOCS}, section "{cls.doc_section}", explains.'
            )
        return report
    cfg = get_cfg()
    cfg.DATASET.ROOT, cfg.DATASET.NAME, cfg.DATASET.NUM_SHOTS = root, name, 0
    splits, saved = load_splits(cls, cfg, report)
    if splits is not None:
        check_sizes(report, splits, skip_counts)
        check_images(report, splits, max_images)
        if saved:  # caches are compared with the saved split only
            image_dir = os.path.join(folder, cls.image_folder) if cls.image_folder else folder
            check_caches(report, os.path.join(folder, FEWSHOT_FOLDER), image_dir, splits)
    check_leftovers(report, (folder, os.path.join(folder, FEWSHOT_FOLDER)), clean)
    report.status = f"{len(report.problems)} problem(s)" if report.problems else "ok"
    return report


def summary(reports: Sequence[Report]) -> str:
    rows = [[r.dataset, r.folder, r.status, *r.sizes, r.caches, r.checked] for r in reports]
    headers = [
        "Dataset",
        "Folder",
        "Status",
        "Classes",
        "Train",
        "Val",
        "Test",
        "Few-shot caches",
        "Images opened",
    ]
    return tabulate(rows, headers=headers)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m clipfit.data doctor", description=__doc__.split("\n\n")[1])
    parser.add_argument("--root", required=True, help="the data root (train.py's --root)")
    parser.add_argument(
        "--dataset",
        nargs="+",
        default=[],
        help="only these datasets (config or DATASET.NAME names); default: every one present",
    )
    parser.add_argument(
        "--max-images",
        type=int,
        default=200,
        help="images opened per dataset, spread over it; 0 opens all (default 200)",
    )
    parser.add_argument(
        "--skip-counts",
        action="store_true",
        help="do not compare sizes with CoOp's published ones (for a deliberate subset)",
    )
    parser.add_argument(
        "--clean",
        action="store_true",
        help="remove the partial files of interrupted writes found in the datasets and in --output-dir",
    )
    parser.add_argument(
        "--output-dir",
        nargs="+",
        default=[],
        help="also look for partial files of interrupted writes in these run folders (recursively)",
    )
    args = parser.parse_args(argv)
    import_loaders()
    names = [resolve_name(n) for n in args.dataset] or known_datasets()
    reports = [
        check_dataset(n, args.root, args.max_images, args.skip_counts, requested=bool(args.dataset),
                      clean=args.clean)
        for n in names
    ]
    problems = [p for r in reports for p in r.problems]
    for folder in args.output_dir:
        runs = Report("runs", folder)
        check_leftovers(runs, [folder], args.clean, recursive=True)
        problems += runs.problems
    for problem in problems:
        print(problem.line())
    if not any(r.status != "absent" for r in reports):
        from datasets.toy import MAKE_DATA  # importable once the loaders are

        root = os.path.abspath(args.root)
        print(f"No dataset found under {root}: nothing was checked. See {DOCS} for the expected folders; "
              f"`python -m clipfit.data prepare --list --root {root}` shows what is there, and "
              f"`{MAKE_DATA} {root}` draws the toy world's datasets.")
        return 1
    print(summary(reports))
    print(f"{len(problems)} problem(s) found." if problems else "No problems found.")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
