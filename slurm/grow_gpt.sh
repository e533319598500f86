#!/bin/bash
# The whole ligo_ds pipeline as one batch job: fit the LiGO operator, hand the grown model to
# DeepSpeed, pretrain it. Resubmitting (or a requeue after preemption) resumes where it stopped.
#
# Edit the #SBATCH lines for your cluster, or override them on the command line; set the run through
# environment variables (sbatch passes the submitting shell's environment):
#   SOURCE=runs/small/hf TARGET=configs/gpt2-medium.json DATA=data/c4 RUN_DIR=runs/grow-medium \
#   sbatch slurm/grow_gpt.sh
#
#   SOURCE      small model, an HF checkpoint directory                       (required)
#   TARGET      large model's HF config.json                                  (required)
#   DATA        DATA_DIR from `ligo-ds prepare`                               (required)
#   RUN_DIR     where fit/, grown/, train/ go                                 (required)
#   DS_CONFIG   zero3 (default), zero2, zero3_offload or a JSON path
#   FIT_STEPS   operator steps (default 100)
#   MAX_TOKENS  the grown model's pretraining tokens (1e11, 100B, 2.5T), or MAX_STEPS its optimizer steps:
#               one of them (required, unless EXTRA_ARGS gives --max-tokens or --max-steps)
#   LAUNCHER    torchrun (default), srun or deepspeed (see slurm/launch.sh)
#   GPUS_PER_NODE  ranks per node (default: the GPUs Slurm gave the node)
#   EXTRA_ARGS  more `ligo-ds grow` flags, e.g. "--micro-batch 16 --lr 3e-4 --width-init net2net"
#
# For LAUNCHER=srun ask for one task per GPU: sbatch --ntasks-per-node=8 ...
#SBATCH --job-name=ligo-grow
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --time=24:00:00
#SBATCH --output=%x-%j.out
#SBATCH --open-mode=append
#SBATCH --requeue
#SBATCH --signal=B:USR1@300
set -uo pipefail

: "${SOURCE:?set SOURCE to the small model's HF directory}"
: "${TARGET:?set TARGET to the large model's config.json}"
: "${DATA:?set DATA to a prepared DATA_DIR}"
: "${RUN_DIR:?set RUN_DIR}"
: "${DS_CONFIG:=zero3}" "${FIT_STEPS:=100}" "${EXTRA_ARGS:=}"

cd "${SLURM_SUBMIT_DIR:-.}"
# sbatch runs a copy of this script; the original (beside launch.sh) is the job's Command.
source "$(dirname "$(scontrol show job "$SLURM_JOB_ID" | sed -n 's/^ *Command=\([^ ]*\).*/\1/p')")/launch.sh"

# shellcheck disable=SC2086  # EXTRA_ARGS is a list of flags
ligo_launch "$RUN_DIR/train/hf/config.json" grow --source "$SOURCE" --target "$TARGET" --data "$DATA" \
  --out "$RUN_DIR" --ds-config "$DS_CONFIG" --fit-steps "$FIT_STEPS" $(ligo_length_args) $EXTRA_ARGS
