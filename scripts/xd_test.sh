#!/usr/bin/env bash
# Cross-dataset transfer, step 2: test the ImageNet model of xd_train.sh on DATASET.
#   bash scripts/xd_test.sh DATASET SEED [KEY VALUE ...]
# Output: $OUT/xd/test/DATASET/shots_$SHOTS/$TRAINER/$CFG/seed$SEED ($CFG: the source model's)
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
run_script xd_test "$@"
