"""Benchmark (not a test): CLIPFit as built vs the straightforward implementation, and CLIPFit's
training step in other precisions and compiled, as ratios to fp32 eager.

The real ViT-B/16 architecture with random weights, on the current device, for K class
prompts. "straightforward" is what the authors' code does: the text encoder runs all 77
positions, ``test()`` re-encodes the class prompts for every batch, and a checkpoint
stores the whole model. Both variants tune the same tensors with the same loss.

Per variant and K it measures ms per training image (forward, backward, SGD step),
ms per test image (one ``test()``-style pass), peak memory and checkpoint size, then
prints a table with the ratios and checks the targets (K = 500: training <= 0.5 and
test <= 0.3 of the straightforward time; checkpoint < 1 MB). Each measurement runs in
its own process, so peak memory is per variant. Defaults keep it to a few minutes on
two CPU cores; ``--batch-size 32 --iters 5 --test-images 500 --test-batch-size 100``
scales it to the paper's settings.

With ``--prec`` other than fp32 or with ``--compile`` it measures CLIPFit's training step
(``CLIPFitModel.loss``, backward, SGD) in fp32 eager and in each requested mode instead, each in
its own process, at batch 8 and K = 50 by default: the first step (compilation included) and
the median of ``--iters`` later steps, and peak memory, all as ratios to fp32 eager measured in
the same run. It checks the targets (bf16 <= 0.6x, bf16 compiled <= 0.5x of fp32 eager) and
rewrites its block (``train-speed-precision``) of ``docs/benchmarks.md`` with the table, the date, the machine and the command.

    python bench/train_speed.py [--classes 50 500] [--device cuda]
    python bench/train_speed.py --prec bf16 --compile [--device cuda --prec fp16 amp bf16]
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from clipfit.training import tuned_checkpoint as ck  # noqa: E402
from clipfit.training.precision import PREC_CHOICES  # noqa: E402
from clipfit.methods.clip_loader import architecture  # noqa: E402
from clipfit.methods.openai_clip import clip_api  # noqa: E402
from clipfit.methods.clipfit import CLIPFitModel  # noqa: E402
from clipfit.testing.tiny_clip import build_vit_b16, class_names  # noqa: E402
from clipfit.methods.text import normalize  # noqa: E402
from clipfit.docs_blocks import measured_line, write_block  # noqa: E402
from speed_modes import Mode, Runner, check_device, machine, median, peak_bytes, sync  # noqa: E402

VARIANTS = ("clipfit", "straightforward")
TARGETS = {"train": 0.5, "test": 0.3, "checkpoint_bytes": 1 << 20}
MODE_TARGETS = {"bf16": 0.6, "bf16+compile": 0.5}  # step time as a fraction of fp32 eager
DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "benchmarks.md")
DOCS_BLOCK = "train-speed-precision"


class StraightforwardCLIPFit(CLIPFitModel):
    """Same tuned tensors and loss; class features through ``CLIP.encode_text`` on 77 tokens."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        full = clip_api.tokenize([self.template.format(n.replace("_", " ")) for n in self.classnames])
        self.register_buffer("full_tokens", full.to(self.prompt_tokens.device), persistent=False)

    def class_text_features(self) -> torch.Tensor:
        return normalize(self.clip.encode_text(self.full_tokens))


def _checkpoint_bytes(model: CLIPFitModel, optim: torch.optim.Optimizer, full: bool) -> int:
    """Size of the checkpoint file each variant writes (the whole model's tensors for ``full``)."""
    if full:  # the state dict of every CLIP tensor; counted, not written (hundreds of MB)
        tensors = sum(t.numel() * t.element_size() for t in model.clip.state_dict().values())
        momentum = sum(s["momentum_buffer"].numel() * 4 for s in optim.state.values() if "momentum_buffer" in s)
        return tensors + momentum
    state = {
        "state_dict": ck.learned_state(model.learned_parameters()),
        "epoch": 1,
        "optimizer": optim.state_dict(),
        "scheduler": None,
        "val_result": None,
        "meta": ck.make_meta("ViT-B/16", architecture(model.clip), model.learned_parameters(),
                             model.checkpoint_settings()),
    }
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getbuffer().nbytes


def measure(variant: str, classes: int, args: argparse.Namespace) -> Dict[str, float]:
    """Build the variant and time training steps and one test pass (runs in a worker process)."""
    device = torch.device(args.device)
    torch.manual_seed(0)
    clip_model = build_vit_b16("cpu").to(device)
    cls = StraightforwardCLIPFit if variant == "straightforward" else CLIPFitModel
    model = cls(clip_model, class_names(classes), args.template).to(device)
    params = list(model.learned_parameters().values())
    optim = torch.optim.SGD(params, lr=0.002, momentum=0.9, weight_decay=5e-4)
    res = clip_model.visual.input_resolution
    gen = torch.Generator().manual_seed(1)
    images = torch.randn(args.batch_size, 3, res, res, generator=gen).to(device)
    labels = torch.randint(0, classes, (args.batch_size,), generator=gen).to(device)

    model.train()
    step_times = []
    for i in range(args.warmup + args.iters):
        sync(device)
        start = time.perf_counter()
        loss, _ = model.loss(images, labels)
        optim.zero_grad()
        loss.backward()
        optim.step()
        sync(device)
        if i >= args.warmup:
            step_times.append(time.perf_counter() - start)
    train_ms = 1000.0 * sum(step_times) / len(step_times) / args.batch_size

    model.eval()
    test_batches = [
        torch.randn(min(args.test_batch_size, args.test_images - s), 3, res, res, generator=gen).to(device)
        for s in range(0, args.test_images, args.test_batch_size)
    ]
    sync(device)
    start = time.perf_counter()
    with torch.no_grad():
        cached = model.class_text_features() if variant == "clipfit" else None  # once per test() call
        for batch in test_batches:
            model.logits(batch, cached).argmax(dim=1)
    sync(device)
    test_ms = 1000.0 * (time.perf_counter() - start) / args.test_images
    return {
        "train_ms": train_ms,
        "test_ms": test_ms,
        "peak_mb": peak_bytes(device) / 2**20,
        "checkpoint_bytes": _checkpoint_bytes(model, optim, full=variant == "straightforward"),
        "text_positions": int(model.prompt_tokens.shape[1]) if variant == "clipfit" else 77,
    }


def measure_mode(mode: Mode, classes: int, args: argparse.Namespace) -> Dict[str, float]:
    """CLIPFit's training step in ``mode`` (runs in a worker process): first and later steps, peak memory."""
    device = torch.device(args.device)
    torch.manual_seed(0)
    runner = Runner(lambda clip: CLIPFitModel(clip, class_names(classes), args.template),
                    build_vit_b16("cpu"), mode, device)
    res = runner.model.clip.visual.input_resolution
    gen = torch.Generator().manual_seed(1)
    images = torch.randn(args.batch_size, 3, res, res, generator=gen).to(device)
    labels = torch.randint(0, classes, (args.batch_size,), generator=gen).to(device)
    first, steps = runner.time_training(images, labels, args.warmup + args.iters)
    if runner.compiler.failure:
        raise RuntimeError(f"{mode}: compiling failed ({runner.compiler.failure})")
    return {"first_s": first, "step_s": median(steps[args.warmup:]), "peak_mb": peak_bytes(device) / 2**20}


def _run_worker(variant: str, classes: int, argv: List[str], env: Optional[Dict[str, str]] = None) -> Dict[str, float]:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", variant, str(classes), *argv]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"worker {variant} K={classes} failed:\n{proc.stdout}\n{proc.stderr}")
    return json.loads(lines[-1][len("RESULT "):])


def _size(n: float) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 1024:.0f} KiB"


def report(results: Dict[int, Dict[str, Dict[str, float]]]) -> bool:
    """Print the table and the target checks; True when every target is met."""
    from tabulate import tabulate

    rows, ok = [], True
    for k, by_variant in sorted(results.items()):
        for v in VARIANTS:
            r = by_variant[v]
            rows.append([k, v, r["text_positions"], f"{r['train_ms']:.1f}", f"{r['test_ms']:.1f}",
                         f"{r['peak_mb']:.0f}", _size(r["checkpoint_bytes"])])
        a, b = by_variant["clipfit"], by_variant["straightforward"]
        ratio = {key: a[key] / b[key] for key in ("train_ms", "test_ms", "peak_mb", "checkpoint_bytes")}
        rows.append([k, "ratio", "", f"{ratio['train_ms']:.3f}", f"{ratio['test_ms']:.3f}",
                     f"{ratio['peak_mb']:.3f}", f"{ratio['checkpoint_bytes']:.5f}"])
        if k == 500:
            ok &= ratio["train_ms"] <= TARGETS["train"] and ratio["test_ms"] <= TARGETS["test"]
        ok &= a["checkpoint_bytes"] < TARGETS["checkpoint_bytes"]
    print(tabulate(rows, headers=["K", "variant", "text pos.", "train ms/img", "test ms/img",
                                  "peak MiB", "checkpoint"]))
    print(f"Targets (K=500: train <= {TARGETS['train']}, test <= {TARGETS['test']} of straightforward; "
          f"checkpoint < 1 MiB): {'met' if ok else 'NOT met'}")
    return ok


def mode_table(results: Dict[str, Dict[str, float]]) -> Tuple[str, bool]:
    """The Markdown table of the modes with ratios to fp32 eager, and whether the targets are met."""
    base = results["fp32"]
    lines = ["| mode | step | vs fp32 eager | first step | vs fp32 eager | peak memory | vs fp32 eager |",
             "|---|---|---|---|---|---|---|"]
    ok = True
    for mode, r in results.items():
        ratio = {k: r[k] / base[k] for k in ("step_s", "first_s", "peak_mb")}
        target = MODE_TARGETS.get(mode)
        met = "" if target is None else (" (target <= %.1fx: %s)" % (target, "met" if ratio["step_s"] <= target else "NOT met"))
        ok &= target is None or ratio["step_s"] <= target
        lines.append(f"| {mode} | {r['step_s']:.2f} s | {ratio['step_s']:.2f}x{met} | {r['first_s']:.1f} s | "
                     f"{ratio['first_s']:.2f}x | {r['peak_mb']:.0f} MiB | {ratio['peak_mb']:.2f}x |")
    return "\n".join(lines), ok


def run_modes(args: argparse.Namespace, argv: List[str]) -> int:
    """Measure fp32 eager and every requested mode in this run; print and write the table."""
    device = torch.device(args.device)
    modes = [Mode("fp32")] + [Mode(p) for p in args.prec if p != "fp32"]
    modes += [Mode(m.prec, True) for m in list(modes)] if args.compile else []
    check_device(modes, device)
    k = args.classes[0]
    shared = ["--device", args.device, "--batch-size", str(args.batch_size), "--iters", str(args.iters),
              "--warmup", str(args.warmup), "--template", args.template]
    print(f"CLIPFit training step, ViT-B/16 with random weights, K={k}, batch {args.batch_size}, device "
          f"{args.device}: first step, then the median of {args.iters} step(s) after {args.warmup} more", flush=True)
    results: Dict[str, Dict[str, float]] = {}
    for mode in modes:
        start = time.time()
        with tempfile.TemporaryDirectory() as cache:  # an empty inductor cache: the first step compiles cold
            results[str(mode)] = _run_worker(f"mode:{mode}", k, shared, {"TORCHINDUCTOR_CACHE_DIR": cache})
        print(f"  measured {mode} ({time.time() - start:.0f} s)", flush=True)
    table, ok = mode_table(results)
    print(table)
    print(f"Targets (bf16 <= {MODE_TARGETS['bf16']}x, bf16 compiled <= {MODE_TARGETS['bf16+compile']}x of fp32 "
          f"eager, where measured): {'met' if ok else 'NOT met'}")
    if args.docs:
        command = "python bench/train_speed.py " + " ".join(shlex.quote(a) for a in argv)
        write_block(args.docs, DOCS_BLOCK, "\n".join([
            f"CLIPFit training step (`CLIPFitModel.loss`, backward, SGD), ViT-B/16 with random weights, K={k}, "
            f"batch {args.batch_size}, {args.device}; median of {args.iters} step(s) after the first:", "", table,
            "", measured_line(command, machine(device)),
        ]))
        print(f"Wrote the table to {args.docs}")
    return 0 if ok else 1


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--classes", type=int, nargs="+", help="numbers of classes K (default 50 500; modes: 50)")
    p.add_argument("--batch-size", type=int, help="training images per step (default 4; modes: 8; paper: 32)")
    p.add_argument("--iters", type=int, help="timed training steps (default 1; modes: 4, median)")
    p.add_argument("--warmup", type=int, default=0, help="untimed training steps first (modes: after the first)")
    p.add_argument("--test-images", type=int, default=4, help="images in the test pass")
    p.add_argument("--test-batch-size", type=int, default=2, help="test batch size (configs: 100)")
    p.add_argument("--template", default="a photo of a {}.", help="prompt template")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--prec", nargs="+", choices=PREC_CHOICES, default=["fp32"],
                   help="precisions to compare with fp32 eager (fp16 and amp need --device cuda)")
    p.add_argument("--compile", action="store_true", help="also each precision with TRAIN.COMPILE's torch.compile")
    p.add_argument("--docs", default=DOCS, help="Markdown file whose block the mode table rewrites")
    p.add_argument("--no-docs", dest="docs", action="store_const", const="", help="do not write the table")
    p.add_argument("--worker", nargs=2, metavar=("VARIANT", "K"), help=argparse.SUPPRESS)
    return p


def main(argv: List[str] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    modes = args.compile or args.prec != ["fp32"]
    for key, variants_default, modes_default in (("classes", [50, 500], [50]), ("batch_size", 4, 8), ("iters", 1, 4)):
        if getattr(args, key) is None:
            setattr(args, key, modes_default if modes else variants_default)
    if args.worker:
        variant, k = args.worker[0], int(args.worker[1])
        if variant.startswith("mode:"):
            result = measure_mode(Mode.parse(variant[len("mode:"):]), k, args)
        else:
            result = measure(variant, k, args)
        print("RESULT " + json.dumps(result), flush=True)
        return 0
    if modes:
        return run_modes(args, argv)
    shared = _strip_classes(argv)
    print(f"ViT-B/16, random weights, device {args.device}, fp32, {torch.get_num_threads()} threads; "
          f"train batch {args.batch_size} x {args.iters} timed step(s), test {args.test_images} images "
          f"in batches of {args.test_batch_size}", flush=True)
    results: Dict[int, Dict[str, Dict[str, float]]] = {}
    for k in args.classes:
        for v in VARIANTS:
            start = time.time()
            results.setdefault(k, {})[v] = _run_worker(v, k, shared)
            print(f"  measured K={k} {v} ({time.time() - start:.0f} s)", flush=True)
    return 0 if report(results) else 1


def _strip_classes(argv: List[str]) -> List[str]:
    """``argv`` without ``--classes`` and its values (workers get K separately)."""
    out, skipping = [], False
    for a in argv:
        if a == "--classes":
            skipping = True
            continue
        if skipping and not a.startswith("--"):
            continue
        skipping = False
        out.append(a)
    return out


if __name__ == "__main__":
    sys.exit(main())
