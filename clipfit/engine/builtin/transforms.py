"""Image transforms built from ``INPUT.*`` exactly as Dassl builds them."""
from __future__ import annotations

from typing import Optional, Sequence

import torchvision.transforms as T
from torchvision.transforms.functional import InterpolationMode
from clipfit.errors import ConfigValueError

INTERPOLATION_MODES = {
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
    "nearest": InterpolationMode.NEAREST,
}

# Dassl's names that the built-in engine implements; the rest need real Dassl.
AVAI_CHOICES = [
    "random_flip",
    "random_resized_crop",
    "normalize",
    "random_crop",
    "center_crop",
    "colorjitter",
    "randomgrayscale",
    "gaussian_blur",
]


def _check(cfg, choices: Sequence[str]) -> None:
    unknown = [c for c in choices if c not in AVAI_CHOICES]
    if unknown:
        raise ConfigValueError(
            f"INPUT.TRANSFORMS has {unknown}, which the built-in engine does not implement. "
            f"Supported: {AVAI_CHOICES}. Install Dassl.pytorch for its other transforms."
        )
    if cfg.INPUT.INTERPOLATION not in INTERPOLATION_MODES:
        raise ConfigValueError(
            f"INPUT.INTERPOLATION '{cfg.INPUT.INTERPOLATION}' is unknown; use one of "
            f"{list(INTERPOLATION_MODES)}"
        )


def build_transform(cfg, is_train: bool = True, choices: Optional[Sequence[str]] = None):
    """Training or test transform from ``cfg.INPUT`` (``choices`` overrides INPUT.TRANSFORMS)."""
    if cfg.INPUT.NO_TRANSFORM:
        print("Note: no transform is applied!")
        return None
    choices = list(cfg.INPUT.TRANSFORMS if choices is None else choices)
    _check(cfg, choices)
    normalize = T.Normalize(mean=cfg.INPUT.PIXEL_MEAN, std=cfg.INPUT.PIXEL_STD)
    if is_train:
        return _build_train(cfg, choices, normalize)
    return _build_test(cfg, choices, normalize)


def _build_train(cfg, choices: Sequence[str], normalize) -> T.Compose:
    print("Building transform_train")
    interp = INTERPOLATION_MODES[cfg.INPUT.INTERPOLATION]
    size = tuple(cfg.INPUT.SIZE)
    tfm = []
    if "random_crop" not in choices and "random_resized_crop" not in choices:
        print(f"+ resize to {size[0]}x{size[1]}")
        tfm.append(T.Resize(size, interpolation=interp))
    if "random_crop" in choices:
        print(f"+ random crop (padding = {cfg.INPUT.CROP_PADDING})")
        tfm.append(T.RandomCrop(size, padding=cfg.INPUT.CROP_PADDING))
    if "random_resized_crop" in choices:
        scale = tuple(cfg.INPUT.RRCROP_SCALE)
        print(f"+ random resized crop (size={size}, scale={scale})")
        tfm.append(T.RandomResizedCrop(size, scale=scale, interpolation=interp))
    if "random_flip" in choices:
        print("+ random flip")
        tfm.append(T.RandomHorizontalFlip())
    if "colorjitter" in choices:
        i = cfg.INPUT
        print("+ color jitter")
        tfm.append(T.ColorJitter(i.COLORJITTER_B, i.COLORJITTER_C, i.COLORJITTER_S, i.COLORJITTER_H))
    if "randomgrayscale" in choices:
        print("+ random gray scale")
        tfm.append(T.RandomGrayscale(p=cfg.INPUT.RGS_P))
    if "gaussian_blur" in choices:
        print(f"+ gaussian blur (kernel={cfg.INPUT.GB_K})")
        tfm.append(T.RandomApply([T.GaussianBlur(cfg.INPUT.GB_K)], p=cfg.INPUT.GB_P))
    print("+ to torch tensor of range [0, 1]")
    tfm.append(T.ToTensor())
    if "normalize" in choices:
        print(f"+ normalization (mean={cfg.INPUT.PIXEL_MEAN}, std={cfg.INPUT.PIXEL_STD})")
        tfm.append(normalize)
    return T.Compose(tfm)


def _build_test(cfg, choices: Sequence[str], normalize) -> T.Compose:
    print("Building transform_test")
    interp = INTERPOLATION_MODES[cfg.INPUT.INTERPOLATION]
    size = tuple(cfg.INPUT.SIZE)
    print(f"+ resize the smaller edge to {max(size)}")
    print(f"+ {size[0]}x{size[1]} center crop")
    print("+ to torch tensor of range [0, 1]")
    tfm = [T.Resize(max(size), interpolation=interp), T.CenterCrop(size), T.ToTensor()]
    if "normalize" in choices:
        print(f"+ normalization (mean={cfg.INPUT.PIXEL_MEAN}, std={cfg.INPUT.PIXEL_STD})")
        tfm.append(normalize)
    return T.Compose(tfm)
