"""Food-101: 101 dish classes, one image folder per class."""

from clipfit.data.folders import CoOpDataset
from clipfit.data.splits import Split, split_class_folders
from clipfit.engine import DATASET_REGISTRY


@DATASET_REGISTRY.register()
class Food101(CoOpDataset):
    """Food-101 with CoOp's split; a missing split is made 50/20/30 per class folder."""

    dataset_dir = "food-101"
    image_folder = "images"
    split_file = "split_zhou_Food101.json"
    doc_section = "Food101"
    layout = """
food-101/
├── images/            one folder per class: apple_pie/, baby_back_ribs/, ...
├── meta/              (from the archive; not read)
└── split_zhou_Food101.json
"""

    def create_split(self) -> Split:
        return split_class_folders(self.image_dir)
