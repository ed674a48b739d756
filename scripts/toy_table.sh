#!/usr/bin/env bash
# The README's toy-world table: base-to-new on the toy datasets (seeds 1 2 3, 16 shots) for
# zero-shot CLIP, CLIPFit and its ablations (paper Table 6) and the baselines, on the shipped
# toy CLIP, on three draws of the data; then parse_test_res.py's table per draw, the draws side
# by side with the paper's five findings checked on each, and the wall time:
#   bash scripts/toy_table.sh                                  # both toy datasets, draws 1 2 3
#   TOY_DATASETS=toy_shapes DRAWS=1 JOBS=1 bash scripts/toy_table.sh
# Draw k is drawn into $TOY_DATA/draw<k> (default $DATA/toy_draws/draw<k>) when missing, with
# make-data --seed k; its runs go to $TOY_OUT/draw<k> (default $OUT/toy/draw<k>). Rerunning skips
# finished runs. Each sweep runs its runs in workers forked from one python that imported torch.
# TOY_DOCS=docs/toy-world.md writes the side-by-side tables into that page's toy-table-<dataset> blocks.
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
TOY_DATASETS="${TOY_DATASETS:-toy_shapes toy_cold}"
DRAWS="${DRAWS:-1 2 3}"
JOBS="${JOBS:-2}"
TOY_DATA="${TOY_DATA:-$DATA/toy_draws}"
TOY_OUT="${TOY_OUT:-$OUT/toy}"
METHODS=(ZeroshotCLIP:toy CLIPFit:toy CLIPFit:toy_reg_none CLIPFit:toy_image_none CLIPFit:toy_text_none
         KgCoOp:toy CoOp:toy CoOp:toy_ul CLIP_Adapter:toy)
read -r -a datasets <<<"$TOY_DATASETS"
read -r -a draws <<<"$DRAWS"

start=$SECONDS
roots=()
for k in "${draws[@]}"; do
    export DATA="$TOY_DATA/draw$k" OUT="$TOY_OUT/draw$k"
    "$PYTHON" -m clipfit.toyworld make-data --root "$DATA" --seed "$k" --datasets "${datasets[@]}" || exit 1
    echo "== draw $k: DATA=$DATA OUT=$OUT bash scripts/sweep.sh base2new --datasets ${datasets[*]} --seeds 1 2 3 --jobs $JOBS --methods ${METHODS[*]}"
    "$PYTHON" -m clipfit.experiments.sweep base2new --datasets "${datasets[@]}" --seeds 1 2 3 --jobs "$JOBS" \
        --methods "${METHODS[@]}" --status-every 60 | grep --line-buffered -v '^  run  ' || exit 1
    echo
    "$PYTHON" parse_test_res.py --base2new "$OUT/base2new" --format markdown
    roots+=("$OUT/base2new")
done
docs=(); [ -n "${TOY_DOCS:-}" ] && docs=(--docs "$TOY_DOCS" --measured-by "DRAWS='$DRAWS' TOY_DATASETS='$TOY_DATASETS' bash scripts/toy_table.sh")
for d in "${datasets[@]}"; do echo; "$PYTHON" -m clipfit.toyworld table "${roots[@]}" --dataset "$d" "${docs[@]}"; done
echo
echo "Wall time of the table: $(( (SECONDS - start) / 60 )) min $(( (SECONDS - start) % 60 )) s ($JOBS jobs at a time, $(nproc) CPUs)"
