"""ImageNet-R: renditions (art, cartoons, ...) of 200 ImageNet classes."""

from clipfit.engine import DATASET_REGISTRY

from .imagenet import ImageNetVariant


@DATASET_REGISTRY.register()
class ImageNetR(ImageNetVariant):
    """Test-only; labels 0..199 over the sorted wnid folders (``imagenet_labels`` maps them to ImageNet's)."""

    dataset_dir = "imagenet-rendition"
    image_folder = "imagenet-r"
    doc_section = "ImageNet-R"
    layout = """
imagenet-rendition/
├── imagenet-r/        200 folders n01443537/, ... (README.txt is ignored)
└── classnames.txt     a copy of imagenet/classnames.txt
"""
