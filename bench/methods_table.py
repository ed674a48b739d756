"""Benchmark (not a test): learned parameters and training time per image of every trainer.

The paper's Table 7 columns for the real ViT-B/16 architecture with random weights, on the
current device, each method built from its shipped default config (the one
``scripts/_common.sh`` picks for base-to-new; Tip-Adapter's DTD config) for K classes.
Training time per image is one optimiser step (forward, backward, SGD; ProGrad: its two
gradients and the projection) divided by the batch size, after one untimed warm-up step.
Tip-Adapter trains nothing: its row shows the cost of one cache view per image (an image
forward pass; its cache takes AUGMENT_EPOCH of them). Tip-Adapter-F's keys are
``shots x K`` features.

    python bench/methods_table.py [--classes 10] [--shots 16] [--batch-size 4] [--device cuda]
        [--page docs/benchmarks.md]   # also write the table into the page's methods-table block
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import time
import warnings
from typing import Callable, Dict, List, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from tabulate import tabulate  # noqa: E402

from clipfit.docs_blocks import measured_line, write_block  # noqa: E402
from clipfit.methods.clip_adapter import CLIPAdapterModel  # noqa: E402
from clipfit.methods.clipfit import CLIPFitModel, CLIPFitSettings  # noqa: E402
from clipfit.methods.cocoop import CoCoOpModel  # noqa: E402
from clipfit.methods.coop import CoOpModel, KgCoOpModel  # noqa: E402
from clipfit.methods.maple import MaPLeModel  # noqa: E402
from clipfit.methods.prograd import ProGradModel  # noqa: E402
from clipfit.methods.templates import resolve_template  # noqa: E402
from clipfit.methods.text import normalize  # noqa: E402
from clipfit.methods.tip_adapter import TipAdapterModel, TipSettings  # noqa: E402
from clipfit.testing.tiny_clip import build_vit_b16, class_names  # noqa: E402
from clipfit.training.config import get_cfg, merge_from_file  # noqa: E402

# trainer -> (config under configs/trainers/, builder(clip, classnames, cfg, shots))
Builder = Callable[..., torch.nn.Module]


def _tip(learn: bool) -> Builder:
    def build(clip, names, cfg, shots):
        n = shots * len(names)
        keys = normalize(torch.randn(n, clip.text_projection.shape[1], device=clip.text_projection.device))
        labels = torch.arange(len(names), device=keys.device).repeat_interleave(shots)
        return TipAdapterModel(clip, names, [resolve_template(cfg)], keys, labels,
                               TipSettings.from_cfg(cfg.TRAINER.TIP_ADAPTER), learn)
    return build


METHODS: Dict[str, Tuple[str, Builder]] = {
    "CLIPFit": ("CLIPFit/vit_b16.yaml", lambda c, n, cfg, s: CLIPFitModel(
        c, n, resolve_template(cfg), CLIPFitSettings.from_cfg(cfg.TRAINER.CLIPFIT))),
    "CoOp": ("CoOp/vit_b16_ctxv1.yaml", lambda c, n, cfg, s: CoOpModel.from_cfg(c, n, cfg)),
    "CoCoOp": ("CoCoOp/vit_b16_c4_ep10_batch1_ctxv1.yaml", lambda c, n, cfg, s: CoCoOpModel.from_cfg(c, n, cfg)),
    "ProGrad": ("ProGrad/vit_b16_ep100.yaml", lambda c, n, cfg, s: ProGradModel.from_cfg(c, n, cfg)),
    "CLIP_Adapter": ("CLIP_Adapter/vit_b16.yaml", lambda c, n, cfg, s: CLIPAdapterModel.from_cfg(c, n, cfg)),
    "TipAdapter": ("TipAdapter/vit_b16_dtd.yaml", _tip(False)),
    "TipAdapterF": ("TipAdapterF/vit_b16_dtd.yaml", _tip(True)),
    "KgCoOp": ("KgCoOp/vit_b16_ep100_ctxv1.yaml", lambda c, n, cfg, s: KgCoOpModel.from_cfg(c, n, cfg)),
    "MaPLe": ("MaPLe/vit_b16_c2_ep5_batch4_2ctx.yaml", lambda c, n, cfg, s: MaPLeModel.from_cfg(c, n, cfg)),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def step(model: torch.nn.Module, optim: torch.optim.Optimizer, images: torch.Tensor, labels: torch.Tensor) -> None:
    """One training step as the method's trainer takes it."""
    if isinstance(model, ProGradModel):
        xe, kl, _ = model.losses(images, labels)
        for p, g in zip(model.learned_parameters().values(), model.projected_gradients(xe, kl)):
            p.grad = g
    else:
        optim.zero_grad()
        model.loss(images, labels)[0].backward()
    optim.step()


def measure(name: str, template_clip: torch.nn.Module, args: argparse.Namespace) -> List:
    config, build = METHODS[name]
    cfg = get_cfg()
    merge_from_file(cfg, f"configs/trainers/{config}")
    cfg.DATASET.NAME = "DescribableTextures"
    device = torch.device(args.device)
    names = class_names(args.classes)
    model = build(copy.deepcopy(template_clip), names, cfg, args.shots).to(device)
    learned = model.learned_parameters()
    n_learned = sum(p.numel() for p in learned.values())
    g = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch_size, 3, 224, 224, generator=g).to(device)
    labels = torch.randint(0, args.classes, (args.batch_size,), generator=g).to(device)
    if learned:
        optim = torch.optim.SGD(list(learned.values()), lr=1e-6, momentum=0.9)
        run = lambda: step(model, optim, images, labels)  # noqa: E731
        what = "train step"
    else:
        run = lambda: model.image_features(images)  # noqa: E731
        what = "one cache view (forward)"
    run()  # warm-up
    _sync(device)
    start = time.perf_counter()
    for _ in range(args.iters):
        run()
    _sync(device)
    ms = 1000 * (time.perf_counter() - start) / (args.iters * args.batch_size)
    return [name, f"{n_learned:,}", f"{ms:.0f}", what]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--shots", type=int, default=16, help="Tip-Adapter-F cache: shots per class")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--iters", type=int, default=1, help="timed steps per method")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--methods", nargs="*", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--page", help="Markdown page whose '<!-- begin: methods-table -->' block gets the "
                                  "table and where it was measured")
    args = p.parse_args(argv)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clip = build_vit_b16("cpu").float().eval()
    rows = [measure(name, clip, args) for name in args.methods]
    setting = (f"ViT-B/16, random weights, fp32, {args.device}, K={args.classes}, batch {args.batch_size}, "
               f"{args.iters} timed step(s)")
    table = tabulate(rows, headers=["trainer", "learned params", "ms / train image", "timed"], tablefmt="github")
    print(f"{setting}\n{table}")
    if args.page:
        device = torch.cuda.get_device_name() if args.device.startswith("cuda") else None
        command = "python bench/methods_table.py " + " ".join(argv if argv is not None else sys.argv[1:])
        write_block(args.page, "methods-table", f"{setting}:\n\n{table}\n\n{measured_line(command.strip(), device)}")


if __name__ == "__main__":
    main()
