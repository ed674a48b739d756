"""ImageNetV2 (matched frequency): a new ImageNet test set, folders named by label."""

import os
from typing import Dict, List, Tuple

from clipfit.engine import DATASET_REGISTRY

from .imagenet import CLASSNAMES, ImageNetVariant


@DATASET_REGISTRY.register()
class ImageNetV2(ImageNetVariant):
    """Folder ``<i>`` holds class ``i``, the i-th line of ``classnames.txt``."""

    dataset_dir = "imagenetv2"
    image_folder = "imagenetv2-matched-frequency-format-val"
    doc_section = "ImageNetV2"
    layout = """
imagenetv2/
├── imagenetv2-matched-frequency-format-val/   folders 0/, 1/, ..., 999/
└── classnames.txt     a copy of imagenet/classnames.txt
"""

    def class_folders(self, classnames: Dict[str, str]) -> List[Tuple[str, str]]:
        folders = [(str(label), wnid) for label, wnid in enumerate(classnames)]
        missing = [f for f, _ in folders if not os.path.isdir(os.path.join(self.image_dir, f))]
        if missing:
            raise self.layout_error(
                f"{CLASSNAMES} has {len(folders)} classes but {self.image_dir} lacks the folders "
                f"{', '.join(missing[:5])}."
            )
        return folders
