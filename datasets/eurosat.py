"""EuroSAT: 10 land-use classes of Sentinel-2 satellite images, with CoOp's readable class names."""

from clipfit.data.folders import CoOpDataset
from clipfit.data.splits import Split, split_class_folders
from clipfit.engine import DATASET_REGISTRY

NEW_CNAMES = {
    "AnnualCrop": "Annual Crop Land",
    "Forest": "Forest",
    "HerbaceousVegetation": "Herbaceous Vegetation Land",
    "Highway": "Highway or Road",
    "Industrial": "Industrial Buildings",
    "Pasture": "Pasture Land",
    "PermanentCrop": "Permanent Crop Land",
    "Residential": "Residential Buildings",
    "River": "River",
    "SeaLake": "Sea or Lake",
}


@DATASET_REGISTRY.register()
class EuroSAT(CoOpDataset):
    """EuroSAT with CoOp's split; a missing split is made 50/20/30 per class folder of ``2750/``."""

    dataset_dir = "eurosat"
    image_folder = "2750"
    split_file = "split_zhou_EuroSAT.json"
    doc_section = "EuroSAT"
    layout = """
eurosat/
├── 2750/              one folder per class: AnnualCrop/, Forest/, ..., SeaLake/
└── split_zhou_EuroSAT.json
"""

    def create_split(self) -> Split:
        return split_class_folders(self.image_dir, new_cnames=NEW_CNAMES)
