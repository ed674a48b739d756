"""ImageNet-A: natural adversarial examples of 200 ImageNet classes."""

from clipfit.engine import DATASET_REGISTRY

from .imagenet import ImageNetVariant


@DATASET_REGISTRY.register()
class ImageNetA(ImageNetVariant):
    """Test-only; labels 0..199 over the sorted wnid folders (``imagenet_labels`` maps them to ImageNet's)."""

    dataset_dir = "imagenet-adversarial"
    image_folder = "imagenet-a"
    doc_section = "ImageNet-A"
    layout = """
imagenet-adversarial/
├── imagenet-a/        200 folders n01498041/, ... (README.txt is ignored)
└── classnames.txt     a copy of imagenet/classnames.txt
"""
