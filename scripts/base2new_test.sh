#!/usr/bin/env bash
# Base-to-new generalization, step 2: test the base-trained model on the new classes.
#   bash scripts/base2new_test.sh DATASET SEED [KEY VALUE ...]
# Loads the last checkpoint of $OUT/base2new/train_base/... (LOAD_EPOCH overrides).
# Output (CoOp's layout): $OUT/base2new/test_new/DATASET/shots_$SHOTS/$TRAINER/$CFG/seed$SEED
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
need_args 2 "DATASET SEED [KEY VALUE ...]" "$@"
DATASET="$1" SEED="$2"; shift 2
CFG="$(default_cfg base2new "$DATASET")"
RUN="$DATASET/shots_$SHOTS/$TRAINER/$CFG/seed$SEED"

evaluate "$OUT/base2new/test_new/$RUN" "$OUT/base2new/train_base/$RUN" \
    "base2new test (new classes) $TRAINER/$CFG $DATASET seed $SEED" "$DATASET" "$CFG" \
    DATASET.NUM_SHOTS "$SHOTS" DATASET.SUBSAMPLE_CLASSES new "$@"
