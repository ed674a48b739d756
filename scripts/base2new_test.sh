#!/usr/bin/env bash
# Base-to-new generalization, step 2: test the base-trained model on the new classes.
#   bash scripts/base2new_test.sh DATASET SEED [KEY VALUE ...]
# Loads the last checkpoint of $OUT/base2new/train_base/... (LOAD_EPOCH overrides).
# Output (CoOp's layout): $OUT/base2new/test_new/DATASET/shots_$SHOTS/$TRAINER/$CFG/seed$SEED
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
run_script base2new_test "$@"
