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
#   DRY_RUN=1  print the run folders a script would fill, and exit
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
export PYTHON TRAINER SHOTS DATA OUT CKPT_FREQ
export PYTHONUNBUFFERED=1  # progress reaches logs and the sweep's status lines at once

die() { echo "ERROR: $*" >&2; exit 2; }

need_args() {  # N USAGE "$@": exit with the usage unless at least N arguments were given
    local n="$1" usage="$2"; shift 2
    (( $# >= n )) || die "usage: bash ${0#"$REPO_ROOT"/} $usage
  Trailing KEY VALUE pairs are yacs opts passed to train.py. Environment: TRAINER CFG SHOTS DATA OUT (see scripts/_common.sh)."
}

is_clipfit() { [[ "$TRAINER" == CLIPFit || "$TRAINER" == ClipFit ]]; }
is_zeroshot() { [[ "$TRAINER" == ZeroshotCLIP* || "$TRAINER" == TipAdapter ]]; }  # evaluated only, never trained

default_cfg() {  # SETTING DATASET -> $CFG if set, else the paper's config for $TRAINER
    if [[ -n "${CFG:-}" ]]; then echo "$CFG"; return; fi
    case "$2" in toy_*) echo toy; return ;; esac  # the toy world: configs/trainers/*/toy.yaml
    case "$TRAINER" in
        CLIPFit|ClipFit)  # paper 4.1: 10 epochs (_ep10) for ImageNet and Food101, else 100;
            # beta 8 for base2new and cross-dataset, 2 (_beta2) for distribution shift and
            # few-shot, except few-shot SUN397 and DTD (8)
            local name=vit_b16
            case "$2" in imagenet|food101) name+=_ep10 ;; esac
            case "$1:$2" in dg:*) name+=_beta2 ;; fewshot:sun397|fewshot:dtd) ;; fewshot:*) name+=_beta2 ;; esac
            echo "$name" ;;
        CoOp) echo vit_b16_ctxv1 ;;
        CoCoOp) echo vit_b16_c4_ep10_batch1_ctxv1 ;;
        KgCoOp) echo vit_b16_ep100_ctxv1 ;;
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
        *) echo vit_b16 ;;  # ZeroshotCLIP, CLIP_Adapter
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
    [[ -f "$DATASET_CFG_FILE" ]] || die "no dataset config $DATASET_CFG_FILE. Datasets: \
$(names_in configs/datasets .yaml)"
    [[ -f "$TRAINER_CFG_FILE" ]] || die "no trainer config $TRAINER_CFG_FILE. Set CFG to one \
of: $(names_in "configs/trainers/$folder" .yaml)(or TRAINER to one of: $(names_in configs/trainers))"
}

keep_old_log() {  # DIR: move an unfinished run's log.txt aside (Dassl's name for older logs),
    # so the resumed run writes a complete log.txt, which CoOp's parse_test_res.py reads
    local log="$1/log.txt" stamp
    [[ -f "$log" ]] || return 0
    stamp="$(date -r "$log" +%Y-%m-%d-%H-%M-%S)"
    local dest="$log-$stamp" i=1
    while [[ -e "$dest" ]]; do dest="$log-$stamp-$i"; i=$((i + 1)); done
    mv "$log" "$dest"
}

# launch KIND DIR WHAT DATASET CFG [train.py args and opts...]
#   KIND train: resumable training (--resume DIR); KIND eval: evaluation only.
# A finished run is skipped; an unfinished one (its folder exists without a final result)
# resumes: Dassl's trainer loads the last checkpoint in DIR/<model name>/.
launch() {
    local kind="$1" dir="$2" what="$3" dataset="$4" cfg="$5"; shift 5
    if [[ "$DRY_RUN" == 1 ]]; then echo "$dir"; return 0; fi
    config_files "$dataset" "$cfg"
    local status acc
    read -r status acc <<<"$("$PYTHON" -m clipfit.experiments.results status "$dir")"
    case "$status" in
        finished) echo "==> skip $what: finished (accuracy ${acc}%) in $dir"; return 0 ;;
        unfinished) echo "==> resume $what in $dir"; keep_old_log "$dir" ;;
        *) echo "==> $what -> $dir" ;;
    esac
    local extra=()
    if [[ "$kind" == train ]]; then
        extra=(--resume "$dir")
    else
        extra=(--eval-only)
    fi
    "$PYTHON" train.py --root "$DATA" --seed "$SEED" --trainer "$TRAINER" \
        --dataset-config-file "$DATASET_CFG_FILE" --config-file "$TRAINER_CFG_FILE" \
        --output-dir "$dir" "${extra[@]}" "$@"
    read -r status acc <<<"$("$PYTHON" -m clipfit.experiments.results status "$dir")"
    [[ "$status" == finished ]] || die "train.py exited without a final result in $dir \
(see $dir/log.txt)"
    echo "==> finished $what: accuracy ${acc}%"
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
evaluate() {
    local dir="$1" model_dir="$2" what="$3" dataset="$4" cfg="$5"; shift 5
    if is_zeroshot || [[ "$DRY_RUN" == 1 ]] \
            || [[ "$("$PYTHON" -m clipfit.experiments.results status "$dir")" == finished* ]]; then
        launch eval "$dir" "$what" "$dataset" "$cfg" "$@"  # needs no model (or skips)
        return
    fi
    local status epoch
    read -r status _ <<<"$("$PYTHON" -m clipfit.experiments.results status "$model_dir")"
    [[ "$status" == finished ]] || die "the model in $model_dir is $status: train it first \
(the matching *_train.sh script with the same TRAINER, CFG, SHOTS and seed)"
    epoch="${LOAD_EPOCH:-$("$PYTHON" -m clipfit.experiments.results last-epoch "$model_dir")}"
    [[ -n "$epoch" ]] || die "no checkpoint (model.pth.tar-N) in $model_dir/*/"
    launch eval "$dir" "$what" "$dataset" "$cfg" --model-dir "$model_dir" --load-epoch "$epoch" "$@"
}
