"""t-SNE of image features, zero-shot CLIP next to the fine-tuned model (the paper's Figure 5).

The split is built from the run's own config (dataset, root, shots, seed, base/new
classes, test transform), its images encoded by the pre-trained image encoder and by a
copy with the run's tuned tensors restored, and each feature set (L2-normalised, as the
classifier compares them) embedded in 2-D with scikit-learn's t-SNE.
"""
from __future__ import annotations

import copy
import os
import random
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from sklearn.manifold import TSNE
from sklearn.metrics import silhouette_score

from clipfit.training import tuned_checkpoint as ckpt_io
from clipfit.training.cli import import_plugins
from .plotting import TITLE_SIZE, new_figure, save_figure
from .runs import PretrainedCLIPs, Run, RunError, default_labels, load_run, output_dir
from .tables import write_csv

SPLITS = ("train", "val", "test")
MAX_PERPLEXITY = 30.0
MIN_IMAGES = 5
EXACT_TSNE_MAX = 300  # up to this many points the exact gradient is faster than Barnes-Hut


def auto_perplexity(n: int) -> float:
    """sklearn's default 30, lowered to ``(n - 1) / 3`` for small sets (it must stay below n)."""
    return max(1.0, min(MAX_PERPLEXITY, (n - 1) / 3.0))


def split_items(run: Run, split: str, root: str = "", subsample: str = "") -> Tuple[list, List[str], object]:
    """The items and class names of ``split`` as the run saw them, and the config used."""
    from clipfit.engine import build_dataset, set_random_seed

    if run.cfg is None:
        raise RunError(
            f"t-SNE needs the run's config to rebuild its dataset, but {run.run_dir} has no config.yaml "
            "(train.py writes it): pass the output folder of a run made with this toolkit."
        )
    cfg = run.cfg.clone()
    cfg.defrost()
    if root:
        cfg.DATASET.ROOT = root
    if subsample:
        cfg.DATASET.SUBSAMPLE_CLASSES = subsample
    cfg.freeze()
    import_plugins()
    if cfg.SEED >= 0:  # the few-shot train split depends on the seed, as in training
        set_random_seed(cfg.SEED)
    dataset = build_dataset(cfg)
    items = {"train": dataset.train_x, "val": dataset.val, "test": dataset.test}[split]
    if not items:
        raise RunError(f"The {split} split of {cfg.DATASET.NAME} is empty: choose another --split.")
    return list(items), list(dataset.classnames), cfg


def limit_items(items: Sequence, max_images: int, seed: int) -> list:
    """At most ``max_images`` items, a seeded random subset in the split's order (0: all)."""
    if not max_images or len(items) <= max_images:
        return list(items)
    keep = sorted(random.Random(seed).sample(range(len(items)), max_images))
    return [items[i] for i in keep]


def tuned_copy(model: torch.nn.Module, run: Run) -> torch.nn.Module:
    """A copy of the pre-trained CLIP with the run's tuned tensors restored (shapes checked before)."""
    if not any(name.startswith("visual.") for name in run.tuned):
        raise RunError(
            f"Run {run.label} tuned no image-encoder tensor, so its image features equal zero-shot "
            "CLIP's: t-SNE has nothing to compare."
        )
    tuned = copy.deepcopy(model)
    params = dict(tuned.named_parameters())
    ckpt_io.restore({name: params[name] for name in run.tuned}, run.tuned)
    return tuned


@torch.no_grad()
def encode_images(model: torch.nn.Module, loader, device: torch.device) -> Tuple[np.ndarray, np.ndarray]:
    """L2-normalised image features and labels of every batch of ``loader``."""
    model.to(device).eval()
    features, labels = [], []
    for batch in loader:
        f = model.encode_image(batch["img"].to(device)).float()
        features.append(torch.nn.functional.normalize(f, dim=-1).cpu())
        labels.append(batch["label"])
    return torch.cat(features).numpy(), torch.cat(labels).numpy()


def embed(features: np.ndarray, perplexity: float, seed: int) -> np.ndarray:
    """2-D t-SNE of ``features`` (exact gradient for small sets, Barnes-Hut otherwise)."""
    method = "exact" if len(features) <= EXACT_TSNE_MAX else "barnes_hut"
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", learning_rate="auto", method=method,
                random_state=seed)
    return tsne.fit_transform(features)


def separation(features: np.ndarray, labels: np.ndarray) -> Optional[float]:
    """Silhouette score of the classes in feature space (cosine), None when undefined."""
    n_classes = len(np.unique(labels))
    if not 2 <= n_classes <= len(labels) - 1:
        return None
    return float(silhouette_score(features, labels, metric="cosine"))


def _colours(n: int):
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20" if n <= 20 else "turbo"]
    return [cmap(i if n <= 20 else i / max(1, n - 1)) for i in range(n)]


def plot_tsne(
    panels: Sequence[Tuple[str, np.ndarray, Optional[float]]], labels: np.ndarray, classnames: Sequence[str],
    title: str, path: str,
) -> str:
    """Side-by-side scatter plots, one colour per class, a shared legend of class names."""
    fig, axes = new_figure(1, len(panels), 6.0 * len(panels) + 2.5, 5.8)
    present = sorted(np.unique(labels).tolist())
    colours = _colours(len(present))
    size = 30 if len(labels) <= 300 else 8
    for ax, (name, points, score) in zip(axes[0], panels):
        for colour, c in zip(colours, present):
            mask = labels == c
            ax.scatter(points[mask, 0], points[mask, 1], s=size, color=colour, label=classnames[c], alpha=0.85)
        shown = "n/a" if score is None else f"{score:.3f}"
        ax.set_title(f"{name}\nsilhouette (cosine, features): {shown}", fontsize=TITLE_SIZE)
        ax.set_xlabel("t-SNE dimension 1")
        ax.set_ylabel("t-SNE dimension 2")
    if len(present) <= 40:
        handles, names = axes[0, 0].get_legend_handles_labels()
        fig.legend(handles, names, loc="outside right center", title="class", fontsize=7,
                   ncols=1 if len(present) <= 20 else 2, markerscale=1.5)
    fig.suptitle(title)
    return save_figure(fig, path)


def run_tsne(
    path: str, out_dir: str = "", split: str = "test", max_images: int = 2000, perplexity: float = 0.0,
    seed: int = 0, clip_path: str = "", root: str = "", subsample: str = "", load_epoch: Optional[int] = None,
    device: str = "", label: str = "",
) -> List[str]:
    """The ``tsne`` subcommand: ``tsne_<split>.png`` and ``tsne_<split>.csv`` in ``out_dir``
    (default ``<run>/analysis``)."""
    from clipfit.engine import build_data_loader, build_transform

    run = load_run(path, label or default_labels([path])[0], load_epoch)
    out_dir = output_dir(out_dir, [run])
    items, classnames, cfg = split_items(run, split, root, subsample)
    items = limit_items(items, max_images, seed)
    if len(items) < MIN_IMAGES:
        raise RunError(f"t-SNE needs at least {MIN_IMAGES} images; the {split} split gives {len(items)}.")
    pretrained = PretrainedCLIPs(clip_path).model(run)
    tuned = tuned_copy(pretrained, run)
    loader = build_data_loader(cfg, "SequentialSampler", items, cfg.DATALOADER.TEST.BATCH_SIZE,
                               tfm=build_transform(cfg, is_train=False), is_train=False)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    perp = perplexity or auto_perplexity(len(items))
    panels, coords = [], []
    for name, model in (("Zero-shot CLIP", pretrained), (f"Fine-tuned: {run.label}", tuned)):
        features, labels = encode_images(model, loader, dev)
        points = embed(features, perp, seed)
        panels.append((name, points, separation(features, labels)))
        coords.append(points)
    os.makedirs(out_dir, exist_ok=True)
    title = (f"t-SNE of image features: {cfg.DATASET.NAME} {split} split, {len(items)} images, "
             f"{len(set(labels.tolist()))} classes (perplexity {perp:.1f})")
    png = plot_tsne(panels, labels, classnames, title, os.path.join(out_dir, f"tsne_{split}.png"))
    rows = ([item.impath, int(y), classnames[y], *coords[0][i], *coords[1][i]]
            for i, (item, y) in enumerate(zip(items, labels.tolist())))
    csv_path = write_csv(os.path.join(out_dir, f"tsne_{split}.csv"),
                         ["impath", "label", "classname", "zeroshot_x", "zeroshot_y", "tuned_x", "tuned_y"], rows)
    return [png, csv_path]
