"""Datasets, samplers and data loaders with Dassl's semantics."""
from __future__ import annotations

import os.path as osp
import random
from collections import defaultdict
from typing import Dict, List, Tuple

import torch
from tabulate import tabulate
from torch.utils.data import Dataset as TorchDataset

from .registry import build_dataset
from .tools import read_image
from .transforms import build_transform
from clipfit.errors import ConfigValueError, MissingFileError


class Datum:
    """One image: path, label, domain and class name."""

    def __init__(self, impath: str = "", label: int = 0, domain: int = 0, classname: str = ""):
        if not isinstance(impath, str):
            raise TypeError(f"impath must be a str, got {type(impath).__name__}")
        if not osp.isfile(impath):
            raise MissingFileError(
                f"Image listed in the dataset is missing: {impath}. Check DATASET.ROOT and that "
                "the split file matches the images on disk (see DATASETS.md)."
            )
        self._impath = impath
        self._label = label
        self._domain = domain
        self._classname = classname

    @property
    def impath(self) -> str:
        return self._impath

    @property
    def label(self) -> int:
        return self._label

    @property
    def domain(self) -> int:
        return self._domain

    @property
    def classname(self) -> str:
        return self._classname

    def __repr__(self) -> str:
        return f"Datum({self._impath!r}, label={self._label}, classname={self._classname!r})"


class DatasetBase:
    """Train/val/test lists of :class:`Datum` plus the label space (Dassl's ``DatasetBase``)."""

    dataset_dir = ""
    domains: List[str] = []

    def __init__(self, train_x=None, train_u=None, val=None, test=None):
        self._train_x = train_x
        self._train_u = train_u
        self._val = val
        self._test = test
        self._num_classes = self.get_num_classes(train_x)
        self._lab2cname, self._classnames = self.get_lab2cname(train_x)

    @property
    def train_x(self):
        return self._train_x

    @property
    def train_u(self):
        return self._train_u

    @property
    def val(self):
        return self._val

    @property
    def test(self):
        return self._test

    @property
    def lab2cname(self) -> Dict[int, str]:
        return self._lab2cname

    @property
    def classnames(self) -> List[str]:
        return self._classnames

    @property
    def num_classes(self) -> int:
        return self._num_classes

    @staticmethod
    def get_num_classes(data_source) -> int:
        return max({item.label for item in data_source}) + 1

    @staticmethod
    def get_lab2cname(data_source) -> Tuple[Dict[int, str], List[str]]:
        mapping = {item.label: item.classname for item in data_source}
        labels = sorted(mapping)
        return mapping, [mapping[label] for label in labels]

    def generate_fewshot_dataset(self, *data_sources, num_shots: int = -1, repeat: bool = False):
        """Sample ``num_shots`` items per label from each source (Dassl's random-call order:
        labels in order of first appearance, ``random.sample`` per label)."""
        if num_shots < 1:
            return data_sources[0] if len(data_sources) == 1 else data_sources
        print(f"Creating a {num_shots}-shot dataset")
        output = []
        for data_source in data_sources:
            dataset = []
            for _, items in self.split_dataset_by_label(data_source).items():
                if len(items) >= num_shots:
                    dataset.extend(random.sample(items, num_shots))
                elif repeat:
                    dataset.extend(random.choices(items, k=num_shots))
                else:
                    dataset.extend(items)
            output.append(dataset)
        return output[0] if len(output) == 1 else output

    def split_dataset_by_label(self, data_source) -> Dict[int, list]:
        output = defaultdict(list)
        for item in data_source:
            output[item.label].append(item)
        return output




def build_sampler(sampler_type: str, cfg=None, data_source=None, batch_size: int = 32,
                  n_domain: int = 0, n_ins: int = 2):
    """RandomSampler or SequentialSampler (the two that CoOp-style training uses)."""
    if sampler_type == "RandomSampler":
        return torch.utils.data.RandomSampler(data_source)
    if sampler_type == "SequentialSampler":
        return torch.utils.data.SequentialSampler(data_source)
    raise ConfigValueError(
        f"Sampler '{sampler_type}' is not implemented by the built-in engine "
        "(RandomSampler, SequentialSampler); install Dassl.pytorch for the others."
    )


class DatasetWrapper(TorchDataset):
    """Turns a list of Datum into dicts with img, label, domain, impath and index."""

    def __init__(self, cfg, data_source, transform=None, is_train: bool = False):
        self.cfg = cfg
        self.data_source = data_source
        self.transform = transform
        self.is_train = is_train
        self.k_tfm = cfg.DATALOADER.K_TRANSFORMS if is_train else 1
        self.return_img0 = cfg.DATALOADER.RETURN_IMG0
        if self.k_tfm > 1 and transform is None:
            raise ValueError(f"Cannot augment the image {self.k_tfm} times because transform is None")
        if self.return_img0:
            import torchvision.transforms as T
            from .transforms import INTERPOLATION_MODES
            to_tensor = [T.Resize(cfg.INPUT.SIZE, interpolation=INTERPOLATION_MODES[cfg.INPUT.INTERPOLATION]),
                         T.ToTensor()]
            if "normalize" in cfg.INPUT.TRANSFORMS:
                to_tensor.append(T.Normalize(mean=cfg.INPUT.PIXEL_MEAN, std=cfg.INPUT.PIXEL_STD))
            self.to_tensor = T.Compose(to_tensor)

    def __len__(self) -> int:
        return len(self.data_source)

    def __getitem__(self, idx: int) -> dict:
        item = self.data_source[idx]
        output = {"label": item.label, "domain": item.domain, "impath": item.impath, "index": idx}
        img0 = read_image(item.impath)
        if self.transform is None:
            output["img"] = img0
        elif isinstance(self.transform, (list, tuple)):
            for i, tfm in enumerate(self.transform):
                output["img" if i == 0 else f"img{i + 1}"] = self._transform_image(tfm, img0)
        else:
            output["img"] = self._transform_image(self.transform, img0)
        if self.return_img0:
            output["img0"] = self.to_tensor(img0)
        return output

    def _transform_image(self, tfm, img0):
        imgs = [tfm(img0) for _ in range(self.k_tfm)]
        return imgs[0] if len(imgs) == 1 else imgs


def build_data_loader(cfg, sampler_type: str = "SequentialSampler", data_source=None,
                      batch_size: int = 64, n_domain: int = 0, n_ins: int = 2, tfm=None,
                      is_train: bool = True, dataset_wrapper=None):
    """A DataLoader with Dassl's sampler, ``drop_last`` and pinning rules."""
    if not data_source:
        raise ValueError("Cannot build a data loader on an empty dataset split")
    sampler = build_sampler(sampler_type, cfg=cfg, data_source=data_source, batch_size=batch_size,
                            n_domain=n_domain, n_ins=n_ins)
    wrapper = dataset_wrapper or DatasetWrapper
    return torch.utils.data.DataLoader(
        wrapper(cfg, data_source, transform=tfm, is_train=is_train),
        batch_size=batch_size,
        sampler=sampler,
        num_workers=cfg.DATALOADER.NUM_WORKERS,
        drop_last=is_train and len(data_source) >= batch_size,
        pin_memory=(torch.cuda.is_available() and cfg.USE_CUDA),
    )


class DataManager:
    """Builds the dataset, its transforms and the train/val/test loaders."""

    def __init__(self, cfg, custom_tfm_train=None, custom_tfm_test=None, dataset_wrapper=None):
        dataset = build_dataset(cfg)
        tfm_train = custom_tfm_train if custom_tfm_train is not None else build_transform(cfg, is_train=True)
        tfm_test = custom_tfm_test if custom_tfm_test is not None else build_transform(cfg, is_train=False)
        x = cfg.DATALOADER.TRAIN_X
        self.train_loader_x = build_data_loader(
            cfg, sampler_type=x.SAMPLER, data_source=dataset.train_x, batch_size=x.BATCH_SIZE,
            n_domain=x.N_DOMAIN, n_ins=x.N_INS, tfm=tfm_train, is_train=True,
            dataset_wrapper=dataset_wrapper)
        self.train_loader_u = None
        if dataset.train_u:
            u = cfg.DATALOADER.TRAIN_X if cfg.DATALOADER.TRAIN_U.SAME_AS_X else cfg.DATALOADER.TRAIN_U
            self.train_loader_u = build_data_loader(
                cfg, sampler_type=u.SAMPLER, data_source=dataset.train_u, batch_size=u.BATCH_SIZE,
                n_domain=u.N_DOMAIN, n_ins=u.N_INS, tfm=tfm_train, is_train=True,
                dataset_wrapper=dataset_wrapper)
        t = cfg.DATALOADER.TEST
        self.val_loader = None
        if dataset.val:
            self.val_loader = build_data_loader(
                cfg, sampler_type=t.SAMPLER, data_source=dataset.val, batch_size=t.BATCH_SIZE,
                tfm=tfm_test, is_train=False, dataset_wrapper=dataset_wrapper)
        self.test_loader = build_data_loader(
            cfg, sampler_type=t.SAMPLER, data_source=dataset.test, batch_size=t.BATCH_SIZE,
            tfm=tfm_test, is_train=False, dataset_wrapper=dataset_wrapper)
        self._num_classes = dataset.num_classes
        self._num_source_domains = len(cfg.DATASET.SOURCE_DOMAINS)
        self._lab2cname = dataset.lab2cname
        self.dataset = dataset
        if cfg.VERBOSE:
            self.show_dataset_summary(cfg)

    @property
    def num_classes(self) -> int:
        return self._num_classes

    @property
    def num_source_domains(self) -> int:
        return self._num_source_domains

    @property
    def lab2cname(self) -> Dict[int, str]:
        return self._lab2cname

    def show_dataset_summary(self, cfg) -> None:
        table = [["Dataset", cfg.DATASET.NAME]]
        if cfg.DATASET.SOURCE_DOMAINS:
            table.append(["Source", cfg.DATASET.SOURCE_DOMAINS])
        if cfg.DATASET.TARGET_DOMAINS:
            table.append(["Target", cfg.DATASET.TARGET_DOMAINS])
        table.append(["# classes", f"{self.num_classes:,}"])
        table.append(["# train_x", f"{len(self.dataset.train_x):,}"])
        if self.dataset.train_u:
            table.append(["# train_u", f"{len(self.dataset.train_u):,}"])
        if self.dataset.val:
            table.append(["# val", f"{len(self.dataset.val):,}"])
        table.append(["# test", f"{len(self.dataset.test):,}"])
        print(tabulate(table))
