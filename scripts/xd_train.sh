#!/usr/bin/env bash
# Cross-dataset transfer, step 1: train on 16-shot ImageNet, all classes (CLIPFit: beta 8).
#   bash scripts/xd_train.sh SEED [KEY VALUE ...]
# Output, the ImageNet source model (its test: ImageNet accuracy):
#   $OUT/xd/train/imagenet/shots_$SHOTS/$TRAINER/$CFG/seed$SEED
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
run_script xd_train "$@"
