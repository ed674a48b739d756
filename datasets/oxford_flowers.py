"""Oxford Flowers-102: 102 flower species, names from ``cat_to_name.json``."""

import os
from typing import Dict, List

from scipy.io import loadmat

from clipfit.data.folders import CoOpDataset
from clipfit.data.splits import Split, split_groups
from clipfit.fileio import read_json
from clipfit.engine import DATASET_REGISTRY

LABELS = "imagelabels.mat"
CLASSNAMES = "cat_to_name.json"


@DATASET_REGISTRY.register()
class OxfordFlowers(CoOpDataset):
    """Flowers with CoOp's split; a missing split is made 50/20/30 per class from ``imagelabels.mat``."""

    dataset_dir = "oxford_flowers"
    image_folder = "jpg"
    split_file = "split_zhou_OxfordFlowers.json"
    doc_section = "Flowers102"
    layout = """
oxford_flowers/
├── jpg/               image_00001.jpg ... image_08189.jpg
├── imagelabels.mat    (needed only without the split file)
├── cat_to_name.json   (needed only without the split file)
└── split_zhou_OxfordFlowers.json
"""

    def create_split(self) -> Split:
        self.require_annotations(LABELS, CLASSNAMES)
        by_label: Dict[int, List[str]] = {}  # 1-based label -> images, in order of first appearance
        for i, label in enumerate(loadmat(os.path.join(self.dataset_dir, LABELS))["labels"][0]):
            by_label.setdefault(int(label), []).append(os.path.join(self.image_dir, f"image_{i + 1:05d}.jpg"))
        names = read_json(os.path.join(self.dataset_dir, CLASSNAMES), "Class-name file",
                          "copy cat_to_name.json from CoOp's repository again")
        return split_groups((y - 1, names[str(y)], paths) for y, paths in by_label.items())
