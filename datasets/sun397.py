"""SUN397: 397 scene categories; class names like "outdoor apartment_building"."""

import os
from typing import Dict, List

from clipfit.data.folders import CoOpDataset
from clipfit.data.splits import Split, annotation_lines, make_datums, split_trainval
from clipfit.engine import DATASET_REGISTRY, Datum

CLASS_LIST = "ClassName.txt"
TRAIN_LIST = "Training_01.txt"
TEST_LIST = "Testing_01.txt"


def scene_classname(category: str) -> str:
    """CoOp's class name of a category path: drop the letter folder, reverse the rest.

    "a/abbey" -> "abbey"; "a/apartment_building/outdoor" -> "outdoor apartment_building".
    """
    return " ".join(category.split("/")[1:][::-1])


@DATASET_REGISTRY.register()
class SUN397(CoOpDataset):
    """SUN397 with CoOp's split; without it, partition 01 (20% of its training part as val)."""

    dataset_dir = "sun397"
    image_folder = "SUN397"
    split_file = "split_zhou_SUN397.json"
    doc_section = "SUN397"
    layout = """
sun397/
├── SUN397/            a/abbey/sun_*.jpg, a/apartment_building/outdoor/sun_*.jpg, ...
├── ClassName.txt      (from Partitions.zip; needed only without the split file)
├── Training_01.txt    (idem)
├── Testing_01.txt     (idem)
└── split_zhou_SUN397.json
"""

    def create_split(self) -> Split:
        self.require_annotations(CLASS_LIST, TRAIN_LIST, TEST_LIST)
        with open(os.path.join(self.dataset_dir, CLASS_LIST), "r") as f:
            categories = [line.strip()[1:] for line in f]  # "/a/abbey" -> "a/abbey"
        cname2lab = {c: i for i, c in enumerate(categories)}
        trainval = self.read_list(cname2lab, TRAIN_LIST)
        test = self.read_list(cname2lab, TEST_LIST)
        train, val = split_trainval(trainval)
        return train, val, test

    def read_list(self, cname2lab: Dict[str, int], filename: str) -> List[Datum]:
        """Rows ``/<letter>/<category>/<image>``; the label comes from the category path."""
        path = os.path.join(self.dataset_dir, filename)
        rows = []
        for line in annotation_lines(path):
            imname = line[1:]
            category = os.path.dirname(imname)
            if category not in cname2lab:
                raise self.layout_error(f"{path} lists {imname}, whose category is not in {CLASS_LIST}.")
            rows.append((imname, cname2lab[category], scene_classname(category)))
        return make_datums(rows, self.image_dir, path)
