#!/usr/bin/env bash
# Distribution shift: the 16-shot ImageNet model tested on ImageNetV2, -Sketch, -A and -R.
#   bash scripts/dg_test.sh SEED [KEY VALUE ...]
# The source model sits with the cross-dataset ones ($OUT/xd/train/imagenet/...), and is
# trained first when missing: CLIPFit's paper config here has beta 2 (vit_b16_ep10_beta2),
# a model of its own; other trainers share xd_train.sh's model.
# Output: $OUT/dg/test/TARGET/shots_$SHOTS/$TRAINER/$CFG/seed$SEED
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
run_script dg_test "$@"
