# Shared by grow_gpt.sh and pretrain.sh: sourced, not run. Provides `ligo_launch ARGS...`, which starts
# `ligo-ds ARGS...` on every allocated GPU with the launcher chosen by $LAUNCHER, and handles preemption.
#
#   LAUNCHER=torchrun   (default) one srun task per node, each a torchrun with a c10d rendezvous on the
#                       first node of the allocation
#   LAUNCHER=srun       one srun task per GPU; ranks from SLURM_PROCID / SLURM_LOCALID / SLURM_NTASKS
#   LAUNCHER=deepspeed  the deepspeed runner on the first node, with a hostfile written from the
#                       allocation, --no_ssh_check and the master address set explicitly. The runner's own
#                       Slurm/ssh discovery is fragile (it guesses hosts and slots from the environment and
#                       needs password-less ssh between nodes for pdsh); on several nodes prefer torchrun.
#
# Preemption: USR1 (from `#SBATCH --signal=B:USR1@SECONDS` before the time limit, or `scancel --signal=USR1
# --batch`) or TERM reaches this batch shell. The trap writes $STOP_FILE, which every rank polls; they agree
# on a step, checkpoint and exit 0. The job then requeues itself unless the run had already finished, and
# the requeued job resumes from that checkpoint in whichever phase it was.

: "${LAUNCHER:=torchrun}"
: "${PYTHON:=python}"
: "${GPUS_PER_NODE:=${SLURM_GPUS_ON_NODE:-${SLURM_NTASKS_PER_NODE:-1}}}"
MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
: "${MASTER_PORT:=$((20000 + SLURM_JOB_ID % 20000))}"
export MASTER_ADDR MASTER_PORT

# The run's length as ligo-ds flags, from MAX_TOKENS (e.g. 1e11, 100B, 2.5T) or MAX_STEPS, whichever is set;
# neither where EXTRA_ARGS gives the length itself. ligo-ds refuses a run given both or neither.
ligo_length_args() {
  if [ -n "${MAX_TOKENS:-}" ]; then echo "--max-tokens $MAX_TOKENS"; fi
  if [ -n "${MAX_STEPS:-}" ]; then echo "--max-steps $MAX_STEPS"; fi
}

LIGO_STOP_REQUESTED=0
ligo_on_signal() {
  LIGO_STOP_REQUESTED=1
  echo "$(date -Is) signal received: asking every rank to checkpoint and stop (${STOP_FILE})"
  touch "$STOP_FILE"
}

# Fills the array LIGO_CMD with the launcher part of the command line; ligo-ds's arguments follow it.
ligo_command() {
  case "$LAUNCHER" in
    torchrun)
      # One task per node; the node rank is read inside each task, hence the inner bash.
      LIGO_CMD=(srun --ntasks="$SLURM_NNODES" --ntasks-per-node=1 --kill-on-bad-exit=1 bash -c
        'exec "$0" -m torch.distributed.run --nnodes="$1" --node_rank="$SLURM_NODEID" --nproc_per_node="$2" \
           --rdzv_backend=c10d --rdzv_endpoint="$3" --rdzv_id="$4" -m ligo_ds "${@:5}"'
        "$PYTHON" "$SLURM_NNODES" "$GPUS_PER_NODE" "$MASTER_ADDR:$MASTER_PORT" "$SLURM_JOB_ID") ;;
    srun)
      LIGO_CMD=(srun --ntasks=$((SLURM_NNODES * GPUS_PER_NODE)) --ntasks-per-node="$GPUS_PER_NODE"
        --kill-on-bad-exit=1 "$PYTHON" -m ligo_ds) ;;
    deepspeed)
      local hostfile=${HOSTFILE:-$RUN_DIR/hostfile-$SLURM_JOB_ID}
      scontrol show hostnames "$SLURM_JOB_NODELIST" | sed "s/\$/ slots=$GPUS_PER_NODE/" > "$hostfile"
      LIGO_CMD=("$PYTHON" -m deepspeed.launcher.runner --hostfile "$hostfile" --no_ssh_check
        --master_addr "$MASTER_ADDR" --master_port "$MASTER_PORT" --module ligo_ds) ;;
    *) echo "LAUNCHER=$LAUNCHER: expected torchrun, srun or deepspeed" >&2; return 2 ;;
  esac
}

# ligo_launch DONE_MARKER ARGS...: run ligo-ds ARGS on the allocation; requeue on a stop request unless
# DONE_MARKER (a file the finished run leaves) exists.
ligo_launch() {
  local done_marker=$1; shift
  mkdir -p "$RUN_DIR"
  STOP_FILE=${STOP_FILE:-$RUN_DIR/STOP}
  rm -f "$STOP_FILE"  # a stale request from an earlier job must not stop this one
  trap ligo_on_signal USR1 TERM
  echo "$(date -Is) job $SLURM_JOB_ID (restart ${SLURM_RESTART_COUNT:-0}) on $SLURM_JOB_NODELIST: $LAUNCHER, \
$GPUS_PER_NODE per node, master $MASTER_ADDR:$MASTER_PORT"
  local rc=0 pid
  ligo_command || return 2
  # In the background, so that the trap runs while the job step is still going.
  "${LIGO_CMD[@]}" "$@" & pid=$!
  while :; do
    wait "$pid"; rc=$?
    if [ "$rc" -gt 128 ] && kill -0 "$pid" 2>/dev/null; then continue; fi  # the trap interrupted wait
    break
  done
  echo "$(date -Is) ligo-ds exited with status $rc"
  if [ "$LIGO_STOP_REQUESTED" = 1 ] && [ "$rc" = 0 ] && [ ! -e "$done_marker" ]; then
    echo "$(date -Is) run unfinished: requeueing job $SLURM_JOB_ID"
    scontrol requeue "$SLURM_JOB_ID"
  fi
  return "$rc"
}
