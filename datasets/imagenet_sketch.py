"""ImageNet-Sketch: sketches of the 1,000 ImageNet classes."""

from clipfit.engine import DATASET_REGISTRY

from .imagenet import ImageNetVariant


@DATASET_REGISTRY.register()
class ImageNetSketch(ImageNetVariant):
    """Test-only; labels are the sorted wnid folders, as ImageNet's."""

    dataset_dir = "imagenet-sketch"
    image_folder = "images"
    doc_section = "ImageNet-Sketch"
    layout = """
imagenet-sketch/
├── images/            1,000 folders n01440764/, ... of sketches
└── classnames.txt     a copy of imagenet/classnames.txt
"""
