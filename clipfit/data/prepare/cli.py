"""``python -m clipfit.data prepare DATASET... --root DATA``: download, lay out and check datasets.

For each dataset it fetches what is missing (official sources of CoOp's DATASETS.md, a
mirror, or a folder of archives), checks each file's SHA-256, extracts it into the layout
the loaders read, and runs the doctor on the result. A rerun does only what is missing.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

from tabulate import tabulate

from clipfit.data.prepare.download import MIRROR_ENV, DamagedFile, Fetcher, ManualStep, PrepareError, human
from clipfit.data.prepare.layout import STEPS, is_done, needs_file, remove_leftovers
from clipfit.data.prepare.sources import (
    IMAGENET_LOGIN,
    SPECS,
    DatasetSpec,
    Source,
    downloadable,
    find_spec,
    load_checksums,
)

DOCS_HINT = "DATASETS.md"


def log(*parts: object) -> None:
    print(*parts, flush=True)


def select(names: Sequence[str]) -> List[DatasetSpec]:
    """The datasets named (``all``: every one that can be downloaded), in registry order, once each."""
    keys = set()
    for name in names:
        keys |= {s.key for s in downloadable()} if name == "all" else {find_spec(name).key}
    return [s for s in SPECS if s.key in keys]


def status(root: str, spec: DatasetSpec) -> Tuple[str, List[str]]:
    """``present``, ``partial`` or ``missing``, and the entries still missing."""
    folder = os.path.join(root, spec.folder)
    missing = sorted({p for s in spec.sources if not is_done(folder, s) for p in s.provides})
    if not missing:
        return "present", []
    entries = set(os.listdir(folder)) if os.path.isdir(folder) else set()
    return ("partial" if entries else "missing"), missing


def list_datasets(root: str, specs: Sequence[DatasetSpec]) -> None:
    rows = []
    for spec in specs:
        state, missing = status(root, spec)
        rows.append([spec.key, spec.folder + "/", state, ", ".join(missing), spec.note])
    log(tabulate(rows, headers=["Dataset", "Folder", "Status", "Missing", "Note"]))


def dry_run(root: str, specs: Sequence[DatasetSpec], fetcher: Fetcher) -> None:
    rows = []
    for spec in specs:
        folder = os.path.join(root, spec.folder)
        for src in spec.sources:
            origin = fetcher.origin(spec, src)
            size = f"{human(os.path.getsize(origin))}" if os.path.isfile(origin) else f"~{human(src.size)}"
            if is_done(folder, src):
                action = "present, skip"
            elif not needs_file(folder, src):
                action = "finish in place"
            else:
                action = {"(by": "fetch by hand", "(mi": "missing"}.get(origin[:3], src.step)
            dest = "(labels to sort images/val)" if src.step == "imagenet_devkit" else ", ".join(src.provides)
            rows.append([spec.key, src.name, size, origin, dest, action])
    log(tabulate(rows, headers=["Dataset", "File", "Size", "From", "To (under the dataset folder)", "Action"]))
    log(f"Dataset folders are under {root}. Nothing was downloaded or written (--dry-run).")


def manual_instructions(spec: DatasetSpec, missing: Sequence[Tuple[Source, str]], fetcher: Fetcher) -> str:
    """What the user must do by hand, file by file, then the command to run again (ImageNet is the
    only dataset behind a login)."""
    folder = os.path.join(fetcher.root, spec.folder)
    lines = [f"{spec.registry} cannot be downloaded without a login at image-net.org. To finish it:"]
    lines.append(f"  1. Sign in at {IMAGENET_LOGIN} (create an account and accept the terms of access).")
    lines.append("  2. Download these files from the ILSVRC 2012 page:")
    lines += [f"       {s.name} (~{human(s.size)})" for s, _ in missing]
    lines.append(
        f"  3. Put them in {fetcher.download_dir(spec)}/ (or in a folder passed with --from-archives, "
        "or on your --mirror)."
    )
    lines.append(f"  4. Run again: python -m clipfit.data prepare {spec.key} --root {fetcher.root}")
    lines.append(
        "     It extracts the training set into images/train/<wnid>/, sorts the validation images into "
        "images/val/<wnid>/ by the devkit's labels, and checks the result. Files in .download/ are "
        "deleted once extracted (unless --keep-archives); files in a --from-archives folder are never touched."
    )
    done = [p for s in spec.sources if is_done(folder, s) for p in s.provides]
    if done:
        lines.append(f"  Already in place: {', '.join(sorted(set(done)))}.")
    lines.append(f'  See {DOCS_HINT}, section "{spec.section}".')
    return "\n".join(lines)


def run_doctor(root: str, spec: DatasetSpec, args: argparse.Namespace) -> bool:
    from clipfit.data.doctor import check_dataset, import_loaders

    import_loaders()
    report = check_dataset(spec.registry, root, args.max_images, args.skip_counts, requested=True)
    for problem in report.problems:
        log("  " + problem.line())
    classes, train, val, test = report.sizes
    log(f"  doctor: {report.status} (classes {classes}, train {train}, val {val}, test {test})")
    return not report.problems


def prepare_one(spec: DatasetSpec, fetcher: Fetcher, args: argparse.Namespace) -> bool:
    """Fetch, place and check one dataset; False when something is left to do by hand or failed the doctor."""
    from clipfit.data.splits import folder_lock  # imports torch: not needed by --list and --dry-run

    folder = os.path.join(fetcher.root, spec.folder)
    log(f"== {spec.key} ({spec.registry}) -> {folder}")
    os.makedirs(folder, exist_ok=True)
    with folder_lock(folder):  # a second prepare of this dataset waits, then finds it done
        remove_leftovers(folder)
        if all(is_done(folder, s) for s in spec.sources):
            log("  complete: nothing to download or extract")
            manual = []
        else:
            manual = fetch_and_place(spec, folder, fetcher, args)
    if manual:
        log(manual_instructions(spec, manual, fetcher))
        return False
    return args.download_only or run_doctor(fetcher.root, spec, args)


def fetch_and_place(
    spec: DatasetSpec, folder: str, fetcher: Fetcher, args: argparse.Namespace
) -> List[Tuple[Source, str]]:
    """Fetch every file still needed and run its step; returns the files left to fetch by hand."""
    todo = [s for s in spec.sources if not is_done(folder, s)]
    files: Dict[str, str] = {}
    ours: Dict[str, bool] = {}
    manual: List[Tuple[Source, str]] = []
    fetcher.check_gdown(spec, [s for s in todo if needs_file(folder, s)])
    for src in todo:
        if not needs_file(folder, src):
            continue
        try:
            files[src.name], ours[src.name] = fetcher.obtain(spec, src)
        except ManualStep as e:
            manual.append((src, str(e)))
    if args.download_only:
        log(f"  downloaded; extract later with: python -m clipfit.data prepare {spec.key} --root {fetcher.root}")
        return manual
    for src in sorted(todo, key=lambda s: s.step == "file"):  # archives first, split files last
        if src.name not in files and needs_file(folder, src):
            continue  # left to fetch by hand
        log(f"  {src.step}: {src.name if src.name in files else 'in place'} -> {', '.join(src.provides)}")
        try:
            STEPS[src.step](folder, src, files.get(src.name), ours.get(src.name, False), files)
        except ManualStep as e:
            manual.append((src, str(e)))
        except DamagedFile as e:
            if not ours.get(src.name):
                raise DamagedFile(f"{e} Replace it with a good copy.") from e
            if os.path.exists(files[src.name]):
                os.remove(files[src.name])
            raise DamagedFile(f"{e} It was deleted: run the same command again to download it again.") from e
    if not args.keep_archives:  # what is in place; a file another step still needs is kept
        done = [files[s.name] for s in todo if ours.get(s.name) and is_done(folder, s)]
        remove_downloads(fetcher.download_dir(spec), done)
    return [m for m in manual if m[0].name not in files and needs_file(folder, m[0])]


def remove_downloads(download_dir: str, paths: Sequence[str]) -> None:
    """Delete the archives downloaded for a dataset once it is in place, and the folder if empty."""
    for path in paths:
        if os.path.isfile(path):
            os.remove(path)
    if os.path.isdir(download_dir) and not os.listdir(download_dir):
        os.rmdir(download_dir)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m clipfit.data prepare", description=__doc__.split("\n\n")[1].replace("\n", " ")
    )
    parser.add_argument("datasets", nargs="*", metavar="DATASET", help="config names (dtd, oxford_pets, ...) or all")
    parser.add_argument("--root", required=True, help="the data root (train.py's --root)")
    parser.add_argument(
        "--mirror",
        default=None,
        help=f"take every file from this URL or folder (same file names) instead; default: ${MIRROR_ENV}",
    )
    parser.add_argument("--from-archives", default=None, metavar="FOLDER", help="use only files already in FOLDER")
    parser.add_argument("--download-only", action="store_true", help="fetch the files, extract nothing")
    parser.add_argument("--dry-run", action="store_true", help="list every file, size, source and destination")
    parser.add_argument("--list", action="store_true", help="show which datasets are present, partial or missing")
    parser.add_argument("--keep-archives", action="store_true", help="keep downloaded archives after extracting")
    parser.add_argument("--checksums", default=None, help="JSON file of extra SHA-256 per file name")
    parser.add_argument("--retries", type=int, default=3, help="resumes after a cut connection (default 3)")
    parser.add_argument("--max-images", type=int, default=200, help="images the doctor opens per dataset")
    parser.add_argument("--skip-counts", action="store_true", help="the doctor skips CoOp's published sizes")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    root = os.path.abspath(os.path.expanduser(args.root))
    if args.list:
        list_datasets(root, select(args.datasets) if args.datasets else SPECS)
        return 0
    if not args.datasets:
        raise SystemExit("Name the datasets to prepare (or all); --list shows what is there.")
    specs = select(args.datasets)
    mirror = args.mirror or os.environ.get(MIRROR_ENV) or None
    if args.from_archives and not os.path.isdir(args.from_archives):
        raise SystemExit(f"--from-archives {args.from_archives}: no such folder.")
    fetcher = Fetcher(root, mirror, args.from_archives, load_checksums(args.checksums), args.retries, log=log)
    if args.dry_run:
        dry_run(root, specs, fetcher)
        return 0
    failed = []
    for spec in specs:
        try:
            ok = prepare_one(spec, fetcher, args)
        except PrepareError as e:
            log(f"  ERROR: {e}")
            ok = False
        except KeyboardInterrupt:
            log(f"\nInterrupted during {spec.key}: nothing half-done is left under a name the loaders read. "
                "Run the same command again to continue (downloads resume where they stopped).")
            return 130
        if not ok:
            failed.append(spec.key)
    if fetcher.record_hint():
        log(fetcher.record_hint())
    if failed:
        log(f"Not ready: {', '.join(failed)} (see above). Run the same command again to continue.")
        return 1
    log("All requested datasets are ready." if not args.download_only else "All files are downloaded.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
