"""Describable Textures (DTD): 47 texture classes, one image folder per class."""

from clipfit.data.folders import CoOpDataset
from clipfit.data.splits import Split, split_class_folders
from clipfit.engine import DATASET_REGISTRY


@DATASET_REGISTRY.register()
class DescribableTextures(CoOpDataset):
    """DTD with CoOp's split; a missing split is made 50/20/30 per class from ``images/``."""

    dataset_dir = "dtd"
    image_folder = "images"
    split_file = "split_zhou_DescribableTextures.json"
    doc_section = "DTD"
    layout = """
dtd/
├── images/            one folder per class: banded/, blotchy/, braided/, ...
├── imdb/              (from the archive; not read)
├── labels/            (from the archive; not read)
└── split_zhou_DescribableTextures.json
"""

    read_and_split_data = staticmethod(split_class_folders)  # CoOp's name, for CoOp-style loaders

    def create_split(self) -> Split:
        return split_class_folders(self.image_dir)
