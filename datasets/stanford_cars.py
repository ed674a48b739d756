"""Stanford Cars: 196 car models, class names "<year> <make> <model>" from the devkit's .mat file."""

import os
from typing import List

from scipy.io import loadmat

from clipfit.data.folders import CoOpDataset
from clipfit.data.splits import Split, make_datums, split_trainval
from clipfit.engine import DATASET_REGISTRY, Datum

TRAIN_ANNOS = "devkit/cars_train_annos.mat"
TEST_ANNOS = "cars_test_annos_withlabels.mat"
META = "devkit/cars_meta.mat"


def car_classname(name: str) -> str:
    """CoOp's class name: the trailing year first ("AM General Hummer SUV 2000" -> "2000 AM General ...")."""
    words = name.split(" ")
    return " ".join([words[-1]] + words[:-1])


@DATASET_REGISTRY.register()
class StanfordCars(CoOpDataset):
    """Cars with CoOp's split (paths relative to the dataset folder); without it, 20% of train is val."""

    dataset_dir = "stanford_cars"
    image_folder = ""  # images lie in cars_train/ and cars_test/; split paths start there
    split_file = "split_zhou_StanfordCars.json"
    doc_section = "StanfordCars"
    layout = """
stanford_cars/
├── cars_train/        00001.jpg, ...
├── cars_test/         00001.jpg, ...
├── cars_test_annos_withlabels.mat   (needed only without the split file)
├── devkit/            cars_train_annos.mat, cars_meta.mat (needed only without the split file)
└── split_zhou_StanfordCars.json
"""

    def create_split(self) -> Split:
        self.require_annotations(TRAIN_ANNOS, TEST_ANNOS, META)
        trainval = self.read_annotations("cars_train", TRAIN_ANNOS)
        test = self.read_annotations("cars_test", TEST_ANNOS)
        train, val = split_trainval(trainval)
        return train, val, test

    def read_annotations(self, image_folder: str, anno_file: str) -> List[Datum]:
        """Images of ``image_folder`` with the 1-based ``class`` of each annotation and its meta name."""
        annos = loadmat(os.path.join(self.dataset_dir, anno_file))["annotations"][0]
        names = loadmat(os.path.join(self.dataset_dir, META))["class_names"][0]
        rows = []
        for anno in annos:
            label = int(anno["class"][0, 0]) - 1
            rows.append((os.path.join(image_folder, anno["fname"][0]), label, car_classname(names[label][0])))
        return make_datums(rows, self.dataset_dir, os.path.join(self.dataset_dir, anno_file))
