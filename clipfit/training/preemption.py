"""Time limits and preemption on SLURM: stop at a signal, requeue the job, resume from the last epoch.

Inside :func:`preemptible` (the paper runner's array tasks, :mod:`clipfit.experiments.paper`):

- the trainer keeps a checkpoint of every finished epoch (:func:`after_epoch`, called by the
  base trainer); the previous one is deleted unless ``TRAIN.CHECKPOINT_FREQ`` or the last epoch
  keeps it, so a run holds at most one extra small file (the learned tensors only);
- ``SIGUSR1`` (the time-limit warning of ``sbatch --signal=B:USR1@SECONDS``) stops the run at
  once and requeues the job (``scontrol requeue``); the requeued task resumes from the last
  epoch's checkpoint;
- ``SIGTERM`` does the same while the job is still RUNNING (preemption with a grace time, or a
  signal sent to a running job); when SLURM is already ending the job (``scancel``, its time
  limit, or its own requeue) the run stops without requeueing: ``paper run --resubmit``
  starts it again, and it resumes.

Why a checkpoint per epoch and no save at the signal: resume is bit-identical at epoch
boundaries (model, optimiser, scheduler and random state are in the checkpoint), whereas the
middle of an epoch would also need the data loaders' positions; and after a SIGTERM SLURM
waits only ``KillWait`` seconds (30 by default) before it kills, too short for an epoch of a
large dataset. The work lost is the unfinished epoch.
"""
from __future__ import annotations

import contextlib
import os
import os.path as osp
import signal
import subprocess
from typing import Iterator, Optional

from clipfit.checkpoint_files import checkpoint_file, saved_epochs

TIME_LIMIT_SIGNAL = signal.SIGUSR1  # sbatch --signal=B:USR1@SECONDS
SIGNALS = (TIME_LIMIT_SIGNAL, signal.SIGTERM)
JOB_ID_ENV = "SLURM_JOB_ID"
_active = False
_stopped_by: Optional[int] = None  # the signal that stopped the run


class Preempted(KeyboardInterrupt):
    """The run was stopped by SLURM's signal; it resumes from its last epoch's checkpoint.

    A ``KeyboardInterrupt``, so that the command line records the run as interrupted, as for
    Ctrl-C."""


def active() -> bool:
    """Whether this process runs inside :func:`preemptible`."""
    return _active


def stopped_by() -> Optional[int]:
    """The signal that stopped the run inside the last :func:`preemptible` (None: none did)."""
    return _stopped_by


@contextlib.contextmanager
def preemptible() -> Iterator[None]:
    """Checkpoint every epoch, and on ``SIGUSR1``/``SIGTERM`` stop and requeue (module docstring)."""
    global _active, _stopped_by
    previous = {s: signal.signal(s, _on_signal) for s in SIGNALS}
    _active, _stopped_by = True, None
    try:
        yield
    finally:
        _active = False
        for s, handler in previous.items():
            signal.signal(s, handler)


def _on_signal(signum: int, frame) -> None:
    global _stopped_by
    if _stopped_by is not None:  # already stopping (e.g. SLURM's SIGTERM after our own requeue)
        return
    _stopped_by = signum
    name = signal.Signals(signum).name
    job = os.environ.get(JOB_ID_ENV, "")
    state = job_state(job) if job else ""
    if not job:
        note = "not a SLURM job: not requeued; run it again to resume"
    elif signum == signal.SIGTERM and state != "RUNNING":
        note = (f"SLURM is ending job {job} ({state or 'state unknown'}): not requeued; "
                "'python -m clipfit.experiments.paper run --resubmit' resumes it")
    else:
        note = requeue(job)
    print(f"Stopped by {name}: {note}. The last epoch's checkpoint is kept; the run resumes from it.",
          flush=True)
    raise Preempted(f"stopped by {name}")


def job_state(job: str) -> str:
    """SLURM's state of ``job`` (``RUNNING``, ``COMPLETING``, ...; "" when scontrol cannot tell)."""
    try:
        out = subprocess.run(["scontrol", "show", "job", "-o", job], capture_output=True, text=True,
                             timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    fields = dict(f.split("=", 1) for f in out.split() if "=" in f)
    return fields.get("JobState", "")


def requeue(job: str) -> str:
    """``scontrol requeue JOB``; a note saying whether it worked."""
    try:
        proc = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as err:
        return f"could not requeue job {job} ({err})"
    if proc.returncode:
        return f"could not requeue job {job} ({proc.stderr.strip() or f'exit {proc.returncode}'})"
    return f"requeued job {job}"


def after_epoch(trainer) -> None:
    """Inside :func:`preemptible`: make sure the epoch just finished has a checkpoint, and delete
    the earlier ones that only this rule kept. Called by the base trainer after each epoch."""
    if not _active:
        return
    done = trainer.epoch + 1
    folders = [osp.join(trainer.output_dir, name) for name in trainer.get_model_names()]
    if not folders:
        return
    if not all(osp.isfile(osp.join(f, checkpoint_file(done))) for f in folders):
        trainer.save_model(trainer.epoch, trainer.output_dir)
    freq = trainer.cfg.TRAIN.CHECKPOINT_FREQ
    for folder in folders:
        for epoch in saved_epochs(folder):
            if epoch < done and not (freq > 0 and epoch % freq == 0):
                os.remove(osp.join(folder, checkpoint_file(epoch)))
