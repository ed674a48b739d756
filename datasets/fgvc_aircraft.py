"""FGVC-Aircraft: 100 aircraft variants; its own train/val/test lists are the split."""

import os
from typing import Dict, List, Optional, Tuple

from clipfit.data.folders import CoOpDataset
from clipfit.data.splits import annotation_lines, make_datums
from clipfit.engine import DATASET_REGISTRY, Datum

SPLIT_FILES = ("images_variant_train.txt", "images_variant_val.txt", "images_variant_test.txt")


@DATASET_REGISTRY.register()
class FGVCAircraft(CoOpDataset):
    """Aircraft variants; classes are the lines of ``variants.txt``, labelled in that order."""

    dataset_dir = "fgvc_aircraft"
    image_folder = "images"
    doc_section = "FGVCAircraft"
    layout = """
fgvc_aircraft/         the data/ folder of fgvc-aircraft-2013b, renamed
├── images/            0034309.jpg, ...
├── variants.txt
├── images_variant_train.txt
├── images_variant_val.txt
└── images_variant_test.txt
"""

    def read_data(self) -> Tuple[List[Datum], Optional[List[Datum]], List[Datum]]:
        self.require("variants.txt", *SPLIT_FILES)
        with open(os.path.join(self.dataset_dir, "variants.txt"), "r") as f:
            classnames = [line.strip() for line in f]
        cname2lab = {c: i for i, c in enumerate(classnames)}
        train, val, test = (self.read_list(cname2lab, name) for name in SPLIT_FILES)
        return train, val, test

    def read_list(self, cname2lab: Dict[str, int], filename: str) -> List[Datum]:
        """Rows ``<image id> <variant>``; the variant may contain spaces."""
        path = os.path.join(self.dataset_dir, filename)
        rows = []
        for line in annotation_lines(path):
            imid, *variant = line.split(" ")
            classname = " ".join(variant)
            if classname not in cname2lab:
                raise self.layout_error(f"{path} names the variant {classname!r}, which is not in variants.txt.")
            rows.append((imid + ".jpg", cname2lab[classname], classname))
        return make_datums(rows, self.image_dir, path)
