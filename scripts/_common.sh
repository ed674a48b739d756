# shellcheck shell=bash
# Shared by the experiment scripts (source it, do not run it): the environment contract,
# the paper's per-dataset defaults, and "skip a finished run, resume an unfinished one".
#
# Environment (all optional):
#   TRAINER    trainer name (default CLIPFit); e.g. TRAINER=KgCoOp for a baseline
#   CFG        config name under configs/trainers/$TRAINER/ (default: the paper's, per trainer,
#              setting and dataset; toy for the toy world's toy_* datasets; see default_cfg)
#   SHOTS      shots per class (default 16)
#   DATA       dataset root (default ./data)
#   OUT        output root (default output)
#   PYTHON     python interpreter (default python)
#   CKPT_FREQ  save a checkpoint every N epochs, so an interrupted run resumes (default 5)
#   LOAD_EPOCH epoch of the checkpoint the test scripts load (default: the last one saved)
#   OVERWRITE=1 start a run folder again (train.py --overwrite) when it holds another run
#   DRY_RUN=1  print the run folders a script would fill, and exit
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
TRAINER="${TRAINER:-CLIPFit}"
SHOTS="${SHOTS:-16}"
if [[ -n "${DATA:-}" ]]; then DATA="$(from_caller "$DATA")"; else DATA="./data"; fi
if [[ -n "${OUT:-}" ]]; then OUT="$(from_caller "$OUT")"; else OUT="output"; fi
CKPT_FREQ="${CKPT_FREQ:-5}"
DRY_RUN="${DRY_RUN:-0}"
OVERWRITE="${OVERWRITE:-0}"
RUN_LOCK=.clipfit.lock  # clipfit/training/run_folder.py: LOCK_FILE
export PYTHON TRAINER SHOTS DATA OUT CKPT_FREQ
export PYTHONUNBUFFERED=1  # progress reaches logs and the sweep's status lines at once

die() { echo "ERROR: $*" >&2; exit 2; }

# in_warm_python SCRIPT: run SCRIPT (the caller) again inside one warm python, so that all its
# python commands and sweeps share one torch import (clipfit/experiments/warm_python.py); does
# nothing with WARM=0 or when already inside one. Sets WARM_FLAG for the sweeps it runs. The
# caller's setup before it runs twice, so it must give the same result the second time.
in_warm_python() {
    WARM_FLAG=--warm
    [[ "${WARM:-1}" == 1 ]] || { WARM_FLAG=--no-warm; return 0; }
    [[ -n "${CLIPFIT_WARM_PYTHON:-}" ]] || exec "$PYTHON" -m clipfit.experiments.warm_python run -- bash "$1"
}

need_args() {  # N USAGE "$@": exit with the usage unless at least N arguments were given
    local n="$1" usage="$2"; shift 2
    (( $# >= n )) || die "usage: bash ${0#"$REPO_ROOT"/} $usage
  Trailing KEY VALUE pairs are yacs opts passed to train.py. Environment: TRAINER CFG SHOTS DATA OUT (see scripts/_common.sh)."
}

is_clipfit() { [[ "$TRAINER" == CLIPFit || "$TRAINER" == ClipFit ]]; }
is_zeroshot() { [[ "$TRAINER" == ZeroshotCLIP* || "$TRAINER" == TipAdapter ]]; }  # evaluated only, never trained

default_cfg() {  # SETTING DATASET -> $CFG if set, else the config $TRAINER's own repository uses
    # (SETTING: base2new, fewshot (reads $SHOTS), xd, dg; the source is named beside each choice)
    if [[ -n "${CFG:-}" ]]; then echo "$CFG"; return; fi
    case "$2" in toy_*) echo toy; return ;; esac  # the toy world: configs/trainers/*/toy.yaml
    case "$TRAINER" in
        CLIPFit|ClipFit)  # CLIPFit paper 4.1: 10 epochs (_ep10) for ImageNet and Food101, else 100;
            # beta 8 for base2new and cross-dataset, 2 (_beta2) for distribution shift and
            # few-shot, except few-shot SUN397 and DTD (8)
            local name=vit_b16
            case "$2" in imagenet|food101) name+=_ep10 ;; esac
            case "$1:$2" in dg:*) name+=_beta2 ;; fewshot:sun397|fewshot:dtd) ;; fewshot:*) name+=_beta2 ;; esac
            echo "$name" ;;
        CoOp)
            case "$1:$2" in
                fewshot:imagenet) echo vit_b16_ep50 ;;  # CoOp COOP.md: *_ep50 for ImageNet, all shots
                fewshot:*)  # CoOp COOP.md (scripts/coop/main.sh ... end 16 SHOTS False): 16 random tokens,
                    case "$SHOTS" in 1) echo vit_b16_ep50 ;; 2|4) echo vit_b16_ep100 ;; *) echo vit_b16 ;; esac ;;
                    # 1 shot 50 epochs, 2 and 4 shots 100, 8 and 16 shots 200
                base2new:imagenet|xd:*|dg:*) echo vit_b16_ep50_ctxv1 ;;  # CoOp scripts/cocoop/{base2new,xd}_train.sh
                *) echo vit_b16_ctxv1 ;;  # CoOp scripts/cocoop/base2new_train.sh ("when TRAINER=CoOp")
            esac ;;
        CoCoOp) echo vit_b16_c4_ep10_batch1_ctxv1 ;;  # CoOp scripts/cocoop/{base2new,xd}_train.sh
        KgCoOp) echo vit_b16_ep100_ctxv1 ;;  # KgCoOp scripts/{base2new,xd}_train.sh (W 8.0: scripts/run.sh,
            # xd_train.sh); it ships no few-shot script, so few-shot uses the same config
        MaPLe)  # its scripts: base-to-new depth 9; cross-dataset (and shift) depth 3, 2 epochs
            case "$1" in xd|dg) echo vit_b16_c2_ep5_batch4_2ctx_cross_datasets ;; *) echo vit_b16_c2_ep5_batch4_2ctx ;; esac ;;
        ProGrad)  # its README: 1 shot ep50, 2-4 shots ep100, 8-16 shots 200 epochs with lambda 0.8 on
            # flowers, DTD and EuroSAT; base-to-new ep100 (ImageNet ep50); trained on ImageNet: ep50
            case "$1:$2:$SHOTS" in
                base2new:imagenet:*|xd:*|dg:*|fewshot:*:1) echo vit_b16_ep50 ;;
                base2new:*|fewshot:*:2|fewshot:*:4) echo vit_b16_ep100 ;;
                fewshot:oxford_flowers:*|fewshot:dtd:*|fewshot:eurosat:*) echo vit_b16_lambda0.8 ;;
                *) echo vit_b16 ;;
            esac ;;
        TipAdapter|TipAdapterF) echo "vit_b16_$2" ;;  # one config per dataset, as Tip-Adapter's
        *) echo vit_b16 ;;  # ZeroshotCLIP (CoOp scripts/coop/zeroshot.sh); CLIP_Adapter: its repository
            # (clip_adapter.py only) ships no config or script, see configs/trainers/CLIP_Adapter/vit_b16.yaml
    esac
}

names_in() {  # FOLDER [SUFFIX] -> space-separated names of its entries, SUFFIX removed
    local f
    for f in "$1"/*"${2:-}"; do [[ -e "$f" ]] && printf '%s ' "$(basename "$f" "${2:-}")"; done
    return 0
}

config_files() {  # DATASET CFG -> sets DATASET_CFG_FILE and TRAINER_CFG_FILE, or explains
    local folder="$TRAINER"
    is_clipfit && folder=CLIPFit  # ClipFit, the authors' name, shares CLIPFit's configs
    DATASET_CFG_FILE="configs/datasets/$1.yaml"
    TRAINER_CFG_FILE="configs/trainers/$folder/$2.yaml"
    [[ -f "$DATASET_CFG_FILE" ]] || die "no dataset config $DATASET_CFG_FILE.$(did_you_mean "$1" \
configs/datasets .yaml) Datasets: $(names_in configs/datasets .yaml)"
    [[ -d "configs/trainers/$folder" ]] || die "no trainer configs for TRAINER=$TRAINER \
(configs/trainers/$folder).$(did_you_mean "$TRAINER" configs/trainers) Set TRAINER to one of: \
$(names_in configs/trainers)"
    [[ -f "$TRAINER_CFG_FILE" ]] || die "no trainer config $TRAINER_CFG_FILE.$(did_you_mean "$2" \
"configs/trainers/$folder" .yaml) Set CFG to one of: $(names_in "configs/trainers/$folder" .yaml)"
}

did_you_mean() {  # NAME FOLDER [SUFFIX] -> " Did you mean X?" for the closest entry, or nothing
    "$PYTHON" - "$1" $(names_in "$2" "${3:-}") <<'PY'
import difflib, sys
match = difflib.get_close_matches(sys.argv[1], sys.argv[2:], n=1, cutoff=0.5)
print(f" Did you mean {match[0]}?" if match else "", end="")
PY
}

# launch KIND DIR WHAT DATASET CFG [train.py args and opts...]
#   KIND train: resumable training (--resume DIR); KIND eval: evaluation only.
# The run folder is locked while the script works on it: a second script or train.py on the
# same folder is refused, naming this one. A finished run is skipped (refused when its
# settings differ); an interrupted one resumes from its last checkpoint; a crashed one is
# tried again (see clipfit/training/run_folder.py).
launch() {
    local kind="$1" dir="$2" what="$3" dataset="$4" cfg="$5"; shift 5
    if [[ "$DRY_RUN" == 1 ]]; then echo "$dir"; return 0; fi
    config_files "$dataset" "$cfg"
    local extra=(--resume "$dir")
    [[ "$kind" == train ]] || extra=(--eval-only)
    [[ "$OVERWRITE" == 1 ]] && extra+=(--overwrite)
    mkdir -p "$dir"
    local lock_fd status acc
    exec {lock_fd}>>"$dir/$RUN_LOCK"  # held until unlock; train.py inherits it
    export CLIPFIT_LOCK_FD=$lock_fd
    "$PYTHON" -m clipfit.training.run_folder lock "$what" "$dir" \
        || { local rc=$?; exec {lock_fd}>&-; exit "$rc"; }  # held by another process
    "$PYTHON" train.py --root "$DATA" --seed "$SEED" --trainer "$TRAINER" \
        --dataset-config-file "$DATASET_CFG_FILE" --config-file "$TRAINER_CFG_FILE" \
        --output-dir "$dir" --announce "$what" "${extra[@]}" "$@" \
        || { local rc=$?; unlock "$dir" "$lock_fd"; exit "$rc"; }
    unlock "$dir" "$lock_fd"
    read -r status acc <<<"$("$PYTHON" -m clipfit.experiments.results status "$dir")"
    [[ "$status" == finished ]] || die "train.py exited without a final result in $dir \
(see $dir/log.txt)"
}

unlock() {  # DIR FD: release the run folder's lock (an empty lock file is a released one)
    local fd="$2"
    : >"$1/$RUN_LOCK"
    exec {fd}>&-
    unset CLIPFIT_LOCK_FD
}

# train DIR WHAT DATASET CFG [opts...]: train (zero-shot trainers: evaluate) into DIR
train() {
    local dir="$1" what="$2" dataset="$3" cfg="$4"; shift 4
    if is_zeroshot; then
        launch eval "$dir" "$what" "$dataset" "$cfg" "$@"
    else
        launch train "$dir" "$what" "$dataset" "$cfg" TRAIN.CHECKPOINT_FREQ "$CKPT_FREQ" "$@"
    fi
}

# evaluate DIR MODEL_DIR WHAT DATASET CFG [opts...]: test the model trained in MODEL_DIR
# (train.py starts from that run's settings, see --model-dir in clipfit/training/cli.py)
evaluate() {
    local dir="$1" model_dir="$2" what="$3" dataset="$4" cfg="$5"; shift 5
    if is_zeroshot || [[ "$DRY_RUN" == 1 ]]; then
        launch eval "$dir" "$what" "$dataset" "$cfg" "$@"  # needs no model
        return
    fi
    local status reason epoch
    read -r status reason <<<"$("$PYTHON" -m clipfit.experiments.results status "$model_dir")"
    [[ "$status" == finished ]] || die "the model in $model_dir is $status${reason:+ ($reason)}: \
train it first (the matching *_train.sh script with the same TRAINER, CFG, SHOTS and seed)"
    epoch="${LOAD_EPOCH:-$("$PYTHON" -m clipfit.experiments.results last-epoch "$model_dir")}"
    [[ -n "$epoch" ]] || die "no checkpoint (model.pth.tar-N) in $model_dir/*/"
    launch eval "$dir" "$what" "$dataset" "$cfg" --model-dir "$model_dir" --load-epoch "$epoch" "$@"
}
