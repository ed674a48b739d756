"""Install the ``clipfit`` library package and every runtime dependency.

``trainers/`` and ``datasets/`` stay at the repository root (as in CoOp) and are
deliberately not installed: a top-level ``datasets`` package in site-packages would
shadow Hugging Face ``datasets``.
"""
from setuptools import find_packages, setup

OPEN_CLIP = ["open_clip_torch>=3.3.0,<4", "timm>=1.0"]

setup(
    name="clipfit",
    version="0.1.0",
    description="CLIPFit: parameter-efficient fine-tuning of CLIP as a Dassl/CoOp plugin trainer",
    python_requires=">=3.9",
    packages=find_packages(include=["clipfit", "clipfit.*"]),
    package_data={"clipfit": ["experiments/paper/*.json", "data/prepare/*.json", "toyworld/toy_clip.pt.xz"]},
    install_requires=[
        "torch",
        "torchvision",
        "setuptools<81",  # openai-clip imports pkg_resources, gone from setuptools 81
        "openai-clip",
        "yacs",
        "PyYAML",
        "tabulate",
        "ftfy",
        "regex",
        "tqdm",
        "Pillow",
        "numpy",
        "scipy",
        "scikit-learn",
        "matplotlib",
    ],
    extras_require={
        # open_clip backbones (MODEL.BACKBONE.NAME open_clip:<arch>); timm for its SigLIP/EVA02/ConvNeXt towers
        "open_clip": OPEN_CLIP,
        "test": ["pytest", *OPEN_CLIP],  # the open_clip tests run in the suite
        "tensorboard": ["tensorboard"], "prepare": ["gdown>=4.7"],
    },
)
