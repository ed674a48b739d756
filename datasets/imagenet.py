"""ImageNet (ILSVRC-2012) and the base of its four test-only variants, sharing one label space.

Class names come from CoOp's ``classnames.txt`` (``<wnid> <class name>`` per line, CLIP's
names). Every variant folder holds a copy of it.
"""

import os
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

from clipfit.data.folders import CoOpDataset, FolderDataset
from clipfit.data.listing_cache import CACHE_FILE, cached_listing
from clipfit.data.splits import annotation_lines, list_subfolders, make_datums
from clipfit.engine import DATASET_REGISTRY, Datum, listdir_nohidden

CLASSNAMES = "classnames.txt"


def read_classnames(text_file: str) -> "OrderedDict[str, str]":
    """``<wnid>: <class name>`` from lines ``n01440764 tench``, in file order."""
    classnames: "OrderedDict[str, str]" = OrderedDict()
    for line in annotation_lines(text_file):
        wnid, *words = line.split(" ")
        classnames[wnid] = " ".join(words)
    return classnames


def read_class_folders(
    image_dir: str, folders: List[Tuple[str, str]], classnames: Dict[str, str],
    listing: Optional[Dict[str, List[str]]] = None, verified: bool = False,
) -> List[Datum]:
    """Images of ``<image_dir>/<folder>/``, labelled by position in ``folders`` ((folder, wnid) pairs).

    Images are listed in ``os.listdir`` order, as CoOp does, so a seed samples the same ones;
    ``listing`` (folder -> file names) replaces the listing. ``verified``: the names come from
    a listing cache whose folders are unchanged (:mod:`clipfit.data.listing_cache`), so the
    files are not checked one by one.
    """
    names = listing or {folder: listdir_nohidden(os.path.join(image_dir, folder)) for folder, _ in folders}
    rows = [(os.path.join(folder, name), label, classnames[wnid])
            for label, (folder, wnid) in enumerate(folders) for name in names[folder]]
    if verified:
        return [_unchecked_datum(os.path.join(image_dir, path), label, name) for path, label, name in rows]
    return make_datums(rows, image_dir, image_dir)


def _unchecked_datum(impath: str, label: int, classname: str) -> Datum:
    """A ``Datum`` without its per-file existence check (Dassl's and the built-in ``Datum``
    both keep exactly these attributes)."""
    item = Datum.__new__(Datum)
    item._impath, item._label, item._domain, item._classname = impath, label, 0, classname
    return item


@DATASET_REGISTRY.register()
class ImageNet(CoOpDataset):
    """ImageNet: labels are the sorted wnid folders of ``train/``; ``val/`` is the test (and val) set."""

    dataset_dir = "imagenet"
    image_folder = "images"
    doc_section = "ImageNet"
    layout = """
imagenet/
├── images/
│   ├── train/         1,000 folders n01440764/, n01443537/, ... of training images
│   └── val/           the same 1,000 folders of validation images
└── classnames.txt     "<wnid> <class name>" per line (CoOp's file)
"""

    read_classnames = staticmethod(read_classnames)  # CoOp's name, for CoOp-style loaders

    def read_data(self) -> Tuple[List[Datum], Optional[List[Datum]], List[Datum]]:
        self.require(CLASSNAMES, "images/train", "images/val")
        classnames = read_classnames(os.path.join(self.dataset_dir, CLASSNAMES))
        train_folders = self.wnid_folders("train", classnames)
        val_folders = self.wnid_folders("val", classnames)
        if val_folders != train_folders:
            raise self.layout_error(
                f"images/train has {len(train_folders)} class folders and images/val {len(val_folders)}, "
                "not the same ones: labels would not match. Both must hold the same wnid folders."
            )
        subfolders = [f"{split}/{f}" for split in ("train", "val") for f, _ in train_folders]
        listing, cached = cached_listing(self.image_dir, subfolders, os.path.join(self.dataset_dir, CACHE_FILE))
        splits = [
            read_class_folders(os.path.join(self.image_dir, split), folders, classnames,
                               {f: listing[f"{split}/{f}"] for f, _ in folders}, verified=cached)
            for split, folders in (("train", train_folders), ("val", val_folders))
        ]
        print(f"ImageNet: file listing {'read from the cache' if cached else 'made'} ({os.path.join(self.dataset_dir, CACHE_FILE)})")
        return splits[0], None, splits[1]

    def wnid_folders(self, split: str, classnames: Dict[str, str]) -> List[Tuple[str, str]]:
        """The sorted class folders of ``images/<split>``, each checked against ``classnames.txt``."""
        folders = list_subfolders(os.path.join(self.image_dir, split))
        unknown = [f for f in folders if f not in classnames]
        if unknown:
            raise self.layout_error(
                f"images/{split} has folders missing from {CLASSNAMES}: {', '.join(unknown[:5])}."
            )
        return [(f, f) for f in folders]


class ImageNetVariant(FolderDataset):
    """A test-only ImageNet variant: its class folders named by wnid, class names from ImageNet.

    ``imagenet_labels[label]`` is the ImageNet label (rank of the wnid among the sorted wnids
    of ``classnames.txt``) of each of its classes; ImageNet-A and -R have 200 of them.
    """

    def __init__(self, cfg):
        self.locate(cfg)
        self.require(CLASSNAMES, purpose=f": copy it from imagenet/{CLASSNAMES}")
        classnames = read_classnames(os.path.join(self.dataset_dir, CLASSNAMES))
        folders = self.class_folders(classnames)
        rank = {wnid: i for i, wnid in enumerate(sorted(classnames))}
        self.imagenet_labels = [rank[wnid] for _, wnid in folders]
        data = read_class_folders(self.image_dir, folders, classnames)
        super().__init__(train_x=data, test=data)

    def class_folders(self, classnames: Dict[str, str]) -> List[Tuple[str, str]]:
        """(folder, wnid) per label: the sorted wnid folders, each checked against ``classnames.txt``."""
        folders = list_subfolders(self.image_dir)
        unknown = [f for f in folders if f not in classnames]
        if unknown:
            raise self.layout_error(
                f"{self.image_dir} has folders missing from {CLASSNAMES}: {', '.join(unknown[:5])}."
            )
        return [(f, f) for f in folders]
