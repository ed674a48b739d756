#!/usr/bin/env bash
# Every dataset x seed (1 2 3) of a setting: bash scripts/sweep.sh base2new|fewshot|xd|dg
#   [--seeds 1 2 3] [--datasets dtd ...] [--shots 1 2 4 8 16] [--jobs N] [--dry-run]
#   [--slurm [--sbatch-args '...'] [--max-parallel N]] [-- KEY VALUE ...]
# One job per GPU in CUDA_VISIBLE_DEVICES (else --jobs N at a time); rerunning skips what is
# finished and resumes what was interrupted. Details: python -m clipfit.experiments.sweep --help
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
exec "$PYTHON" -m clipfit.experiments.sweep "$@"
