"""A fake trainer for the sweep tests, run in-process by the sweep's workers in place of
train.py's main: Dassl's log lines, checkpoints, resume and metrics.json in a fraction of a
second, steered by FAKE_* environment variables. ``python tests/_sweep_fake.py ARGS`` is the
sweep (``python -m clipfit.experiments.sweep ARGS``) with this trainer."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import zlib


def _parse(argv):
    p = argparse.ArgumentParser()
    for flag in ("--root", "--seed", "--trainer", "--dataset-config-file", "--config-file",
                 "--output-dir", "--resume", "--model-dir", "--load-epoch", "--announce"):
        p.add_argument(flag, default="")
    p.add_argument("--eval-only", action="store_true")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("opts", nargs=argparse.REMAINDER)
    return p.parse_args(argv)


def _hold(out: str, epoch: int, eval_only: bool) -> None:
    """Wait (at most 2 min) at epoch 3, or before an evaluation's result, until the test
    releases this run (``FAKE_HOLD/release-<seed folder>`` or ``release-test-<seed folder>``)."""
    folder = os.environ.get("FAKE_HOLD")
    if not folder or (epoch != 2 and not eval_only):
        return
    name = ("release-test-" if eval_only else "release-") + os.path.basename(out)
    deadline = time.time() + 120
    while not os.path.exists(os.path.join(folder, name)) and time.time() < deadline:
        time.sleep(0.05)


def fake_train(argv, lock=None) -> None:
    import torch  # preloaded in the workers

    a = _parse(argv)
    out = a.output_dir
    os.makedirs(out, exist_ok=True)
    if os.environ.get("FAKE_CALLS"):  # what the caller asked for, where, and what it found
        with open(os.environ["FAKE_CALLS"], "a") as calls:
            calls.write(json.dumps({
                "argv": list(argv), "found": sorted(os.listdir(out)), "pid": os.getpid(),
                "gpus": os.environ.get("CUDA_VISIBLE_DEVICES"), "threads": torch.get_num_threads(),
                "cuda_initialised": torch.cuda.is_initialized(),
                "checkpoints": sorted(os.listdir(os.path.join(out, "model")))
                if os.path.isdir(os.path.join(out, "model")) else []}) + "\n")
    log_path = os.path.join(out, "log.txt")
    if os.path.exists(log_path):  # Dassl never overwrites a log
        log_path += time.strftime("-%Y-%m-%d-%H-%M-%S")
    with open(log_path, "w") as log:
        def say(msg):
            print(msg, flush=True)
            log.write(msg + "\n")
            log.flush()

        say(f"eval_only: {a.eval_only}")
        if os.environ.get("FAKE_FAIL") and os.environ["FAKE_FAIL"] in out:
            say("RuntimeError: fake failure")
            sys.exit(1)
        if not a.eval_only:
            epochs = int(os.environ.get("FAKE_EPOCHS", "3"))
            ckpt = os.path.join(out, "model", "checkpoint")
            start = 0
            if a.resume and os.path.exists(ckpt):
                with open(ckpt) as f:
                    start = int(f.read().strip().rsplit("-", 1)[1])
                say(f"Found checkpoint at {out} (will resume training)")
                say(f"Previous epoch: {start}")
            else:
                say("No checkpoint found, train from scratch")
            for epoch in range(start, epochs):
                time.sleep(float(os.environ.get("FAKE_EPOCH_SECONDS", "0")))
                _hold(out, epoch, False)
                say(f"epoch [{epoch + 1}/{epochs}] batch [1/1] time 0.1 (0.1) loss 1.0 (1.0) "
                    f"lr 2.0000e-03 eta 0:00:{epochs - epoch - 1:02d}")
                os.makedirs(os.path.dirname(ckpt), exist_ok=True)
                open(os.path.join(out, "model", f"model.pth.tar-{epoch + 1}"), "w").close()
                with open(ckpt, "w") as f:
                    f.write(f"model.pth.tar-{epoch + 1}\n")
            say("Finish training")
        else:
            _hold(out, 0, True)
        acc = 50 + zlib.crc32(out.encode()) % 4000 / 100
        say(f"=> result\n* total: 100\n* correct: {int(acc)}\n* accuracy: {acc:.1f}%\n"
            f"* error: {100 - acc:.1f}%")
        with open(os.path.join(out, "metrics.json"), "w") as f:
            json.dump({"split": "test", "accuracy": acc}, f)
        say("Elapsed: 0:00:01")


if __name__ == "__main__":
    from clipfit.experiments import sweep
    from _sweep_fake import fake_train as train  # by its module's name: the workers import it

    sys.exit(sweep.main(sys.argv[1:], train=train))
