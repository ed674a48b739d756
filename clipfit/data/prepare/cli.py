"""``python -m clipfit.data prepare DATASET... [--root DATA]``: download, lay out and check datasets.

For each dataset it fetches what is missing (each file's maintained address, then CoOp's, then
a mirror; or a folder of archives), checks each file's published or recorded checksum before
extracting it into the layout the loaders read, and runs the doctor on the result. A rerun
does only what is missing. ``--list`` shows what is there, ``--sources`` every file's
addresses and checksums, ``--dry-run`` what a run would do.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from typing import Dict, List, Optional, Sequence, Tuple

from tabulate import tabulate

from clipfit.data.prepare import imagenet
from clipfit.data.prepare.download import MIRROR_ENV, Fetcher, describe, display, is_url
from clipfit.data.prepare.errors import DamagedFile, ManualStep, PrepareError, human
from clipfit.data.prepare.layout import STEPS, is_done, needs_file, remove_leftovers
from clipfit.data.prepare.sources import (
    CHECKSUM_NAME,
    FILES,
    IMAGENET_LOGIN,
    SPECS,
    DatasetSpec,
    Source,
    downloadable,
    find_spec,
    load_checksums,
)

DOCS_HINT = "DATASETS.md"
DATA_ENV = "DATA"  # the data root of CoOp's scripts
FORMATS = ("table", "md", "csv", "json")
LIST_WIDTHS = {"Folder": 21, "What is there": 40}  # the terminal table stays within ~100 columns
SOURCE_WIDTHS = {"Dataset": 12, "File": 18, "Address": 26, "Address from": 18, "Checksum": 16}


def log(*parts: object) -> None:
    print(*parts, flush=True)


def select(names: Sequence[str]) -> List[DatasetSpec]:
    """The datasets named (``all``: every one that can be downloaded), in registry order, once each."""
    keys = set()
    for name in names:
        keys |= {s.key for s in downloadable()} if name == "all" else {find_spec(name).key}
    return [s for s in SPECS if s.key in keys]


def default_root() -> Tuple[str, str]:
    """``$DATA``, else ``./data``, and where it came from."""
    if os.environ.get(DATA_ENV):
        return os.environ[DATA_ENV], f"${DATA_ENV}"
    return "data", "the default ./data"


def entries(root: str, spec: DatasetSpec) -> Dict[str, List[str]]:
    """Each entry the dataset's files provide, by what is really there: present, unfinished (ImageNet
    work extracted by hand, to finish in place) or absent."""
    folder = os.path.join(root, spec.folder)
    state: Dict[str, str] = {}
    for src in spec.sources:
        pending = imagenet.in_place(folder, src.step)
        for entry in src.provides:
            there = os.path.lexists(os.path.join(folder, entry))
            state[entry] = "unfinished" if pending and there else "present" if there else "absent"
    return {kind: [e for e, s in state.items() if s == kind] for kind in ("present", "unfinished", "absent")}


def status(root: str, spec: DatasetSpec) -> Tuple[str, bool]:
    """``complete``, ``usable`` (what the loader reads is there, not the rest), ``partial`` or
    ``missing``; and whether the loader can use the dataset."""
    folder = os.path.join(root, spec.folder)
    present = entries(root, spec)["present"]
    usable = all(e in present for e in spec.reads)
    if all(is_done(folder, s) for s in spec.sources):
        return "complete", usable
    if usable:
        return "usable", True
    return ("partial" if os.path.isdir(folder) and os.listdir(folder) else "missing"), False


def list_records(root: str, specs: Sequence[DatasetSpec]) -> List[dict]:
    records = []
    for spec in specs:
        state, usable = status(root, spec)
        found = entries(root, spec)
        absent = [e if e in spec.reads else f"{e} (not read)" for e in found["absent"]]
        records.append(
            {
                "Dataset": spec.key,
                "Folder": spec.folder + "/",
                "Status": state,
                "Loader can use it": "yes" if usable else "no",
                "Present": found["present"],
                "To finish": found["unfinished"],
                "Absent": absent,
                "Note": spec.note,
            }
        )
    return records


def compact_list(records: Sequence[dict]) -> List[dict]:
    """The terminal table: one column says what is there (and what is absent)."""
    rows = []
    for r in records:
        parts = [f"{k.lower()}: {', '.join(r[k])}" for k in ("Present", "To finish", "Absent") if r[k]]
        there = "; ".join(parts) if r["Status"] != "missing" else "nothing"
        rows.append({**{k: r[k] for k in ("Dataset", "Folder", "Status")}, "Loader": r["Loader can use it"],
                     "What is there": there})
    return rows


def render(records: Sequence[dict], fmt: str, widths: Optional[Dict[str, int]] = None) -> str:
    """``records`` (dicts with the same keys) as a terminal table (wrapped to ``widths``), a Markdown
    table, CSV or JSON; list values are joined with commas except in JSON."""
    if fmt == "json":
        return json.dumps(list(records), indent=1)
    headers = list(records[0]) if records else []
    rows = [[", ".join(v) if isinstance(v, list) else v for v in r.values()] for r in records]
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerows([headers] + rows)
        return buf.getvalue().rstrip("\n")
    if fmt == "md":
        return tabulate(rows, headers=headers, tablefmt="github")
    return tabulate(rows, headers=headers, maxcolwidths=[(widths or {}).get(h) for h in headers])


def list_datasets(root: str, source: str, specs: Sequence[DatasetSpec], fmt: str) -> None:
    records = list_records(root, specs)
    if fmt != "table":
        log(render(records, fmt))
        return
    log(render(compact_list(records), fmt, LIST_WIDTHS))
    log("usable: the loader has all it reads, not all the archives hold.\n(not read): the loader never reads it.")
    for spec in specs:
        if spec.note:
            log(f"{spec.key}: {spec.note}")
    log(f"Data root: {root} ({source}).")


def source_records(specs: Sequence[DatasetSpec], checksums) -> List[dict]:
    """One row per address of every file: where the address comes from and the checksum checked."""
    rows = []
    for spec in specs:
        for src in spec.sources:
            for name in src.names:
                expected = checksums.get(name, [])
                for address in FILES[name].addresses:
                    rows.append(
                        {
                            "Dataset": spec.key,
                            "File": name if name == src.name else f"{name} (holds {src.name})"
                            if dict(FILES[name].holds).get(src.name) else name,
                            "Address": display(address.url),
                            "Address from": address.source,
                            "Checksum": "; ".join(f"{CHECKSUM_NAME[c.algorithm]} ({c.kind}: {c.source})"
                                                  for c in expected) or "none",
                        }
                    )
    return rows


def dry_run(root: str, specs: Sequence[DatasetSpec], fetcher: Fetcher) -> None:
    """Each file: where it goes, and every place it would come from with the checksum it must have."""
    for spec in specs:
        folder = os.path.join(root, spec.folder)
        log(f"== {spec.key} -> {folder}")
        for src in spec.sources:
            dest = "(labels to sort images/val)" if src.step == "imagenet_devkit" else ", ".join(src.provides)
            local = fetcher.found(spec, src)
            size = human(os.path.getsize(local[0])) if local else f"~{human(src.size)}"
            if is_done(folder, src):
                action = "present, skip"
            elif not needs_file(folder, src):
                action = "finish in place"
            elif local:
                action = f"{src.step} from {local[0]}"
            elif fetcher.from_archives:
                action = f"missing from {fetcher.from_archives}"
            else:
                action = src.step
            log(f"  {src.name} ({size}) -> {dest}: {action}")
            if action != src.step:
                continue
            if fetcher.mirror and not is_url(fetcher.mirror):
                log(f"    not in the mirror folder {fetcher.mirror}; then:")
            for i, (name, address) in enumerate(fetcher.addresses(src), start=1):
                copy = "" if name == src.name else f"  [{name}]"
                log(f"    {i}. {display(address.url)}{copy}")
                log(f"       address from: {address.source}")
                log(f"       {describe(fetcher.checksums.get(name, []))}")
            if src.manual:
                log(f"    by hand, after signing in at {IMAGENET_LOGIN}")
                log(f"       {describe(fetcher.checksums.get(src.name, []))}")
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
    parser.add_argument(
        "--root", default=None, help=f"the data root (train.py's --root); default ${DATA_ENV}, else ./data"
    )
    parser.add_argument(
        "--mirror",
        default=None,
        help=f"a URL or folder holding the files under their names, tried after their addresses "
        f"(a folder: before them); default: ${MIRROR_ENV}",
    )
    parser.add_argument("--from-archives", default=None, metavar="FOLDER", help="use only files already in FOLDER")
    parser.add_argument("--download-only", action="store_true", help="fetch the files, extract nothing")
    parser.add_argument("--dry-run", action="store_true", help="each file's destination, addresses and checksum")
    parser.add_argument("--list", action="store_true", help="show what is there for each dataset")
    parser.add_argument("--sources", action="store_true", help="every file's addresses, their source and checksum")
    parser.add_argument("--format", choices=FORMATS, default="table", help="of --list and --sources (full width)")
    parser.add_argument("--keep-archives", action="store_true", help="keep downloaded archives after extracting")
    parser.add_argument("--checksums", default=None, help="JSON file of extra SHA-256 (or MD5) per file name")
    parser.add_argument("--retries", type=int, default=3, help="resumes after a cut connection (default 3)")
    parser.add_argument("--max-images", type=int, default=200, help="images the doctor opens per dataset")
    parser.add_argument("--skip-counts", action="store_true", help="the doctor skips CoOp's published sizes")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    given, where = (args.root, "--root") if args.root else default_root()
    root = os.path.abspath(os.path.expanduser(given))
    chosen = select(args.datasets) if args.datasets else SPECS
    if args.list:
        list_datasets(root, where, chosen, args.format)
        return 0
    if args.sources:
        records = source_records(chosen, load_checksums(args.checksums))
        log(render(records, args.format, SOURCE_WIDTHS))
        return 0
    if not args.datasets:
        raise SystemExit("Name the datasets to prepare (or all); --list shows what is there.")
    mirror = args.mirror or os.environ.get(MIRROR_ENV) or None
    if args.from_archives and not os.path.isdir(args.from_archives):
        raise SystemExit(f"--from-archives {args.from_archives}: no such folder.")
    fetcher = Fetcher(root, mirror, args.from_archives, load_checksums(args.checksums), args.retries, log=log)
    if args.dry_run:
        dry_run(root, chosen, fetcher)
        return 0
    log(f"Data root: {root} ({where}).")
    failed = []
    for spec in chosen:
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
