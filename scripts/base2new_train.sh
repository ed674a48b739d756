#!/usr/bin/env bash
# Base-to-new generalization, step 1: train on the base classes of DATASET.
#   bash scripts/base2new_train.sh DATASET SEED [KEY VALUE ...]
#   TRAINER=KgCoOp bash scripts/base2new_train.sh dtd 1        # a baseline
# Output (CoOp's layout): $OUT/base2new/train_base/DATASET/shots_$SHOTS/$TRAINER/$CFG/seed$SEED
# Its final test is the Base accuracy. Environment and defaults: scripts/_common.sh.
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
run_script base2new_train "$@"
