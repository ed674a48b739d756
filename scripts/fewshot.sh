#!/usr/bin/env bash
# Few-shot classification: train on SHOTS images per class of all classes, test on all.
#   bash scripts/fewshot.sh DATASET SEED SHOTS [KEY VALUE ...]
# CLIPFit's default config follows the paper: beta 8 for sun397 and dtd, else 2 (_beta2).
# Output: $OUT/fewshot/DATASET/shots_SHOTS/$TRAINER/$CFG/seed$SEED
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
run_script fewshot "$@"
