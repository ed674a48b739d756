#!/usr/bin/env bash
# Distribution shift: the 16-shot ImageNet model tested on ImageNetV2, -Sketch, -A and -R.
#   bash scripts/dg_test.sh SEED [KEY VALUE ...]
# The source model sits with the cross-dataset ones ($OUT/xd/train/imagenet/...), and is
# trained first when missing: CLIPFit's paper config here has beta 2 (vit_b16_ep10_beta2),
# a model of its own; other trainers share xd_train.sh's model.
# Output: $OUT/dg/test/TARGET/shots_$SHOTS/$TRAINER/$CFG/seed$SEED
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
need_args 1 "SEED [KEY VALUE ...]" "$@"
SEED="$1"; shift
CFG="$(default_cfg dg imagenet)"
SOURCE="$OUT/xd/train/imagenet/shots_$SHOTS/$TRAINER/$CFG/seed$SEED"

train "$SOURCE" "ImageNet source $TRAINER/$CFG seed $SEED" imagenet "$CFG" \
    DATASET.NUM_SHOTS "$SHOTS" "$@"
for TARGET in $("$PYTHON" -m clipfit.experiments.protocol datasets dg); do
    evaluate "$OUT/dg/test/$TARGET/shots_$SHOTS/$TRAINER/$CFG/seed$SEED" "$SOURCE" \
        "distribution-shift test $TRAINER/$CFG $TARGET seed $SEED" "$TARGET" "$CFG" "$@"
done
