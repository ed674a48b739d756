#!/usr/bin/env bash
# The whole base-to-new pipeline in a few minutes on a CPU, with nothing downloaded:
#   bash scripts/demo.sh
# It fabricates a small DTD-like dataset and a tiny CLIP with RANDOM weights under
# $OUT/demo (default output/demo), runs scripts/base2new_train.sh and base2new_test.sh
# for CLIPFit and zero-shot CLIP over seeds 1 and 2 on the built-in engine (through the
# sweep runner, two jobs at a time), and prints the table of parse_test_res.py --base2new.
# Running it again reuses what is there.
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
DEMO="$OUT/demo"
export DATA="$DEMO/data" OUT="$DEMO/output" CLIPFIT_ENGINE=builtin CKPT_FREQ=1
export CFG=  # each trainer's default config
TINY_CLIP="$DEMO/tiny_clip.pt"
OPTS=(MODEL.BACKBONE.PATH "$TINY_CLIP" INPUT.SIZE "(32, 32)" DATALOADER.NUM_WORKERS 0
      DATALOADER.TRAIN_X.BATCH_SIZE 8 OPTIM.MAX_EPOCH 4 OPTIM.LR 0.05 OPTIM.WARMUP_EPOCH 0
      TRAINER.CLIPFIT.PREC fp32 TRAINER.COOP.PREC fp32)

cat <<EOF
CLIPFit demo: base-to-new generalization, CLIPFit vs zero-shot CLIP, seeds 1 and 2.
The CLIP here has RANDOM weights and the images are fabricated 8x8 noise, so the numbers
below only show that the pipeline runs end to end; they say nothing about CLIPFit.
Working folder: $DEMO
EOF

mkdir -p "$DEMO"
"$PYTHON" - "$DATA" "$TINY_CLIP" <<'EOF'
import os, sys
from clipfit.testing.fake_datasets import make_dataset
from clipfit.testing.tiny_clip import save_tiny_clip
data, tiny_clip = sys.argv[1:]
if not os.path.isdir(os.path.join(data, "dtd")):
    make_dataset("dtd", data, n_classes=6, per_class=10)
if not os.path.isfile(tiny_clip):
    save_tiny_clip(tiny_clip)
EOF
echo "Fabricated: $DATA/dtd (6 classes: 3 base, 3 new) and $TINY_CLIP"

# Both seeds at once (one job per core), zero-shot CLIP first, then CLIPFit: the sweep runner
# users run for the paper's 33 runs per trainer, here on one dataset and two seeds.
for trainer in ZeroshotCLIP CLIPFit; do
    echo
    echo "== TRAINER=$trainer bash scripts/sweep.sh base2new --datasets dtd --seeds 1 2 --jobs 2 -- <demo opts>"
    TRAINER="$trainer" "$PYTHON" -m clipfit.experiments.sweep base2new --datasets dtd --seeds 1 2 --jobs 2 \
        --status-every 15 -- "${OPTS[@]}" | grep --line-buffered -v '^  run  ' || exit 1
done

echo
"$PYTHON" parse_test_res.py --base2new "$OUT/base2new"
cat <<EOF

Again: random weights, fabricated images; these numbers only show the pipeline.
Logs of each run: $OUT/base2new/*/dtd/shots_16/*/*/seed*/log.txt

The real thing (CLIP ViT-B/16 weights, the datasets laid out as in CoOp's DATASETS.md):
  DATA=/path/to/datasets bash scripts/base2new_train.sh dtd 1
  DATA=/path/to/datasets bash scripts/base2new_test.sh dtd 1
  DATA=/path/to/datasets bash scripts/sweep.sh base2new      # 11 datasets x seeds 1 2 3
  python parse_test_res.py --base2new output/base2new --compare-paper
EOF
