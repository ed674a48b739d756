#!/usr/bin/env bash
# Base-to-new on the toy world in a few minutes on a CPU, with nothing downloaded:
#   bash scripts/demo.sh
# It draws the toy dataset toy_shapes (32 colour-shape classes: 16 base, 16 new, half of them
# never seen in pretraining) under $OUT/demo (default output/demo), then runs
# scripts/base2new_train.sh and base2new_test.sh for zero-shot CLIP, CLIPFit and CoOp over
# seeds 1, 2 and 3 on the shipped toy CLIP (MODEL.BACKBONE.NAME toy) with the built-in engine,
# through the sweep runner (JOBS jobs at a time), prints the table of parse_test_res.py
# --base2new and says what it shows. Running it again reuses what is there.
# Each sweep runs its runs in workers forked from one python that imported torch once.
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
export DEMO="${DEMO:-$OUT/demo}"
export DATA="$DEMO/data" OUT="$DEMO" CLIPFIT_ENGINE=builtin CKPT_FREQ=0  # runs in $DEMO/base2new
export CFG=  # scripts/_common.sh picks configs/trainers/<TRAINER>/toy.yaml for toy datasets
JOBS="${JOBS:-2}"
DATASET=toy_shapes

cat <<EOF
CLIPFit demo: base-to-new generalisation on the toy world, zero-shot CLIP vs CLIPFit vs CoOp,
seeds 1 2 3, 16 shots. The CLIP is the toy CLIP shipped with this package, pretrained here on
drawn shapes; the dataset is drawn washed out (faded colours), with clutter and noise.
Working folder: $DEMO
EOF

"$PYTHON" -m clipfit.toyworld make-data --root "$DATA" --datasets "$DATASET" \
    || die "the demo could not draw its dataset (above). If $DEMO was made by another version \
of this project, delete it and run the demo again."

# JOBS jobs at a time: the sweep runner users run for the paper's 33 runs per trainer, here on
# one dataset and three seeds, for the three trainers in one sweep (their jobs share the workers).
echo
echo "== bash scripts/sweep.sh base2new --datasets $DATASET --seeds 1 2 3 --jobs $JOBS --methods ZeroshotCLIP CLIPFit CoOp"
"$PYTHON" -m clipfit.experiments.sweep base2new --datasets "$DATASET" --seeds 1 2 3 --jobs "$JOBS" \
    --methods ZeroshotCLIP CLIPFit CoOp --status-every 15 | grep --line-buffered -v '^  run  ' \
    || die "some demo runs failed (above). If $DEMO holds runs made by another version of this \
project or of its toy CLIP, delete it (rm -rf $DEMO) and run the demo again."

echo
"$PYTHON" parse_test_res.py --base2new "$OUT/base2new"
echo
"$PYTHON" -m clipfit.toyworld explain "$OUT/base2new" --dataset "$DATASET"
"$PYTHON" -m clipfit.toyworld findings "$OUT/base2new" --dataset "$DATASET"
cat <<EOF

Logs of each run: $OUT/base2new/*/$DATASET/shots_16/*/*/seed*/log.txt
The full toy table (CLIPFit's ablations, KgCoOp, CLIP-Adapter, CoOp+UL): bash scripts/toy_table.sh

The real thing (CLIP ViT-B/16 weights, the datasets laid out as in CoOp's DATASETS.md):
  DATA=/path/to/datasets bash scripts/base2new_train.sh dtd 1
  DATA=/path/to/datasets bash scripts/base2new_test.sh dtd 1
  DATA=/path/to/datasets bash scripts/sweep.sh base2new      # 11 datasets x seeds 1 2 3
  python parse_test_res.py --base2new output/base2new --compare-paper
EOF
