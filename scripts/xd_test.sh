#!/usr/bin/env bash
# Cross-dataset transfer, step 2: test the ImageNet model of xd_train.sh on DATASET.
#   bash scripts/xd_test.sh DATASET SEED [KEY VALUE ...]
# Output: $OUT/xd/test/DATASET/shots_$SHOTS/$TRAINER/$CFG/seed$SEED ($CFG: the source model's)
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
need_args 2 "DATASET SEED [KEY VALUE ...]" "$@"
DATASET="$1" SEED="$2"; shift 2
CFG="$(default_cfg xd imagenet)"

evaluate "$OUT/xd/test/$DATASET/shots_$SHOTS/$TRAINER/$CFG/seed$SEED" \
    "$OUT/xd/train/imagenet/shots_$SHOTS/$TRAINER/$CFG/seed$SEED" \
    "cross-dataset test $TRAINER/$CFG $DATASET seed $SEED" "$DATASET" "$CFG" "$@"
