"""The toy world's datasets (``python -m clipfit.toyworld make-data --root DATA`` draws them)."""

from clipfit.data.folders import CoOpDataset
from clipfit.data.splits import Split
from clipfit.engine import DATASET_REGISTRY
from clipfit.toyworld.downstream import DATASETS

MAKE_DATA = "python -m clipfit.toyworld make-data --root"


class ToyDataset(CoOpDataset):
    """A toy dataset: images in class folders under ``images/`` and its ``split_zhou_*.json``."""

    image_folder = "images"
    doc_section = "The toy world"

    def create_split(self) -> Split:
        raise self.layout_error(f"{self.split_path} is missing: the toy datasets come with their split.")


def _register(folder: str) -> type:
    spec = DATASETS[folder]
    layout = f"""
{folder}/
├── images/            one folder per class: <class>/<class>_0000.png, ...
├── toyworld.json      what was drawn, with which seed
└── {spec.split_file}
"""
    attrs = dict(dataset_dir=folder, split_file=spec.split_file, layout=layout, __doc__=f"{spec.name}: {spec.summary}",
                 prepare_command=f"{MAKE_DATA} {{root}} --datasets {folder}")
    return DATASET_REGISTRY.register()(type(spec.name, (ToyDataset,), attrs))


ToyShapes = _register("toy_shapes")
ToyCold = _register("toy_cold")
