#!/usr/bin/env bash
# The README's toy-world table: base-to-new on the toy datasets (seeds 1 2 3, 16 shots) for
# zero-shot CLIP, CLIPFit and its ablations (paper Table 6) and the baselines, on the shipped
# toy CLIP, then parse_test_res.py's table and the wall time of the whole table:
#   bash scripts/toy_table.sh                       # both toy datasets, 2 jobs at a time
#   TOY_DATASETS=toy_shapes JOBS=1 bash scripts/toy_table.sh
# Datasets are drawn into $DATA (default ./data) when missing; runs go to $OUT/toy (default
# output/toy). Rerunning skips finished runs. Each sweep runs its runs in workers forked from one
# python that imported torch once.
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
TOY_DATASETS="${TOY_DATASETS:-toy_shapes toy_cold}"
JOBS="${JOBS:-2}"
export TOY_OUT="${TOY_OUT:-$OUT/toy}"
export OUT="$TOY_OUT"
METHODS=(ZeroshotCLIP:toy CLIPFit:toy CLIPFit:toy_reg_none CLIPFit:toy_image_none CLIPFit:toy_text_none
         KgCoOp:toy CoOp:toy CoOp:toy_ul CLIP_Adapter:toy)
read -r -a datasets <<<"$TOY_DATASETS"

"$PYTHON" -m clipfit.toyworld make-data --root "$DATA" --datasets "${datasets[@]}"
start=$SECONDS
echo "== bash scripts/sweep.sh base2new --datasets ${datasets[*]} --seeds 1 2 3 --jobs $JOBS --methods ${METHODS[*]}"
"$PYTHON" -m clipfit.experiments.sweep base2new --datasets "${datasets[@]}" --seeds 1 2 3 --jobs "$JOBS" \
    --methods "${METHODS[@]}" --status-every 60 | grep --line-buffered -v '^  run  ' || exit 1
echo
"$PYTHON" parse_test_res.py --base2new "$OUT/base2new" --format markdown
echo
echo "Wall time of the table: $(( (SECONDS - start) / 60 )) min $(( (SECONDS - start) % 60 )) s ($JOBS jobs at a time, $(nproc) CPUs)"
