"""Oxford-IIIT Pets: 37 cat and dog breeds."""

import os
from typing import List

from clipfit.data.fewshot import subsample_classes
from clipfit.data.folders import CoOpDataset
from clipfit.data.splits import Split, annotation_lines, make_datums, read_split, save_split, split_trainval
from clipfit.engine import DATASET_REGISTRY, Datum


@DATASET_REGISTRY.register()
class OxfordPets(CoOpDataset):
    """Pets with CoOp's split; a missing split holds out 20% of ``trainval.txt`` per breed as val."""

    dataset_dir = "oxford_pets"
    image_folder = "images"
    split_file = "split_zhou_OxfordPets.json"
    doc_section = "OxfordPets"
    layout = """
oxford_pets/
├── images/            Abyssinian_1.jpg, american_bulldog_10.jpg, ...
├── annotations/       trainval.txt and test.txt (needed only without the split file)
└── split_zhou_OxfordPets.json
"""

    # CoOp's helper names, for CoOp-style loaders that call them through this class
    read_split = staticmethod(read_split)
    save_split = staticmethod(save_split)
    split_trainval = staticmethod(split_trainval)
    subsample_classes = staticmethod(subsample_classes)

    def create_split(self) -> Split:
        self.require_annotations("annotations/trainval.txt", "annotations/test.txt")
        trainval = self.read_annotations("trainval.txt")
        test = self.read_annotations("test.txt")
        train, val = split_trainval(trainval)
        return train, val, test

    def read_annotations(self, filename: str) -> List[Datum]:
        """Rows ``<image> <class id> <species> <breed id>``; the class name is the lower-cased breed."""
        path = os.path.join(self.dataset_dir, "annotations", filename)
        rows = []
        for line in annotation_lines(path):
            imname, label, _species, _breed_id = line.split(" ")
            breed = "_".join(imname.split("_")[:-1]).lower()
            rows.append((imname + ".jpg", int(label) - 1, breed))
        return make_datums(rows, self.image_dir, path)
