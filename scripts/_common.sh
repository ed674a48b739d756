# shellcheck shell=bash
# Shared by the experiment scripts (source it, do not run it): the environment contract, and
# run_script, which runs the script's runs in one python (clipfit/experiments/run.py): the
# protocol's default config (clipfit/experiments/protocol.py), the run folder's lock, skipping a
# finished run, resuming an unfinished one, refusing a folder that holds another run.
#
# Environment (all optional):
#   TRAINER    trainer name (default CLIPFit); e.g. TRAINER=KgCoOp for a baseline
#   CFG        config name under configs/trainers/$TRAINER/ (default: the paper's, per trainer,
#              setting, dataset and shots: python -m clipfit.experiments.protocol table)
#   SHOTS      shots per class (default 16)
#   DATA       dataset root (default ./data)
#   OUT        output root (default output)
#   PYTHON     python interpreter (default python)
#   CKPT_FREQ  save a checkpoint every N epochs, so an interrupted run resumes (default 5)
#   LOAD_EPOCH epoch of the checkpoint the test scripts load (default: the last one saved)
#   OVERWRITE=1 start a run folder again (train.py --overwrite) when it holds another run
#   DRY_RUN=1  print the run folders a script would fill (each with its config's source and
#              its train.py command, indented), and exit
# Trailing arguments of every script are yacs KEY VALUE pairs passed on to train.py. The test
# scripts start from the settings of the trained run they load (its config.yaml: weights,
# input size, precision, template, TRAINER.*); KEY VALUE pairs given to them override those.
# Relative DATA, OUT and PYTHON paths are taken from the folder the script was called from;
# the script itself runs in the repository root, so paths inside yacs opts are relative to it.
set -euo pipefail

CALLER_PWD="$PWD"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

from_caller() {  # PATH -> absolute path, relative ones taken from the caller's folder
    case "$1" in /*) echo "$1" ;; *) echo "${CALLER_PWD%/}/$1" ;; esac
}

PYTHON="${PYTHON:-python}"
[[ "$PYTHON" == */* ]] && PYTHON="$(from_caller "$PYTHON")"
if [[ -n "${DATA:-}" ]]; then DATA="$(from_caller "$DATA")"; else DATA="./data"; fi
if [[ -n "${OUT:-}" ]]; then OUT="$(from_caller "$OUT")"; else OUT="output"; fi
export PYTHON DATA OUT
export PYTHONUNBUFFERED=1  # progress reaches logs and the sweep's status lines at once

die() {  # MESSAGE...: print it as an error and stop the script
    echo "ERROR: $*" >&2
    exit 1
}

# run_script NAME ARGS...: the runs of scripts/NAME.sh, in one python (replaces this shell)
run_script() {
    local name="$1"; shift
    CLIPFIT_SCRIPT="scripts/$name.sh" exec "$PYTHON" -m clipfit.experiments.run "$name" "$@"
}
