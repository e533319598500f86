#!/bin/bash
# One pretraining run (a small model, a scratch baseline, or continuing an HF checkpoint) as a batch job.
# Resubmitting, or a requeue after preemption, resumes from the latest checkpoint.
#
#   MODEL=configs/gpt2-small.json DATA=data/c4 RUN_DIR=runs/small sbatch slurm/pretrain.sh
#
#   MODEL       an HF config.json (from scratch) or an HF checkpoint directory   (required)
#   DATA, RUN_DIR, DS_CONFIG (default zero2), MAX_TOKENS or MAX_STEPS, LAUNCHER, GPUS_PER_NODE,
#   EXTRA_ARGS  as in slurm/grow_gpt.sh
#SBATCH --job-name=ligo-pretrain
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --time=24:00:00
#SBATCH --output=%x-%j.out
#SBATCH --open-mode=append
#SBATCH --requeue
#SBATCH --signal=B:USR1@300
set -uo pipefail

: "${MODEL:?set MODEL to a config.json or HF checkpoint directory}"
: "${DATA:?set DATA to a prepared DATA_DIR}"
: "${RUN_DIR:?set RUN_DIR}"
: "${DS_CONFIG:=zero2}" "${EXTRA_ARGS:=}"

cd "${SLURM_SUBMIT_DIR:-.}"
# sbatch runs a copy of this script; the original (beside launch.sh) is the job's Command.
source "$(dirname "$(scontrol show job "$SLURM_JOB_ID" | sed -n 's/^ *Command=\([^ ]*\).*/\1/p')")/launch.sh"

# shellcheck disable=SC2086
ligo_launch "$RUN_DIR/hf/config.json" pretrain --model "$MODEL" --data "$DATA" --out "$RUN_DIR" \
  --ds-config "$DS_CONFIG" $(ligo_length_args) $EXTRA_ARGS
