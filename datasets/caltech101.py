"""Caltech101: 100 object classes (the background and easy-faces folders are left out)."""

from clipfit.data.folders import CoOpDataset
from clipfit.data.splits import Split, split_class_folders
from clipfit.engine import DATASET_REGISTRY

IGNORED = ("BACKGROUND_Google", "Faces_easy")
NEW_CNAMES = {"airplanes": "airplane", "Faces": "face", "Leopards": "leopard", "Motorbikes": "motorbike"}


@DATASET_REGISTRY.register()
class Caltech101(CoOpDataset):
    """Caltech101 with CoOp's split; a missing split is made 50/20/30 per class folder."""

    dataset_dir = "caltech-101"
    image_folder = "101_ObjectCategories"
    split_file = "split_zhou_Caltech101.json"
    doc_section = "Caltech101"
    layout = """
caltech-101/
├── 101_ObjectCategories/   one folder per class: accordion/, airplanes/, anchor/, ...
└── split_zhou_Caltech101.json
"""

    def create_split(self) -> Split:
        return split_class_folders(self.image_dir, ignored=IGNORED, new_cnames=NEW_CNAMES)
