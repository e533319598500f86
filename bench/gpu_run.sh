#!/usr/bin/env bash
# The GPU run of issue 24 in one script: pretraining throughput against HF + DeepSpeed (compile,
# activation checkpointing and the chunked loss on and off), the LiGO fit step at 124M -> 350M against a
# training step, and the savings study, each stage writing its figures under $OUT.
#
#   bench/gpu_run.sh prepare              here, once per checkout (needs PyPI): DeepSpeed and the wheels it
#                                         needs into .whl/, the study's corpus tokenized into .gpu_data/
#   bench/gpu_run.sh STAGE...             on the GPU machine, through the device tool (bench/README.md):
#       throughput                        bench/throughput.py --preset gpu, within THROUGHPUT_BUDGET_S
#       savings FAMILIES                  bench/savings.py --preset gpu --families FAMILIES (gpt2, llama or
#                                         gpt2,llama), stopped at SAVINGS_BUDGET_S
#       all                               throughput, savings gpt2, savings llama (longer than one
#                                         10-minute device command: for a machine of your own)
#   bench/gpu_run.sh --tiny STAGE...      the same on a CPU at the tiny presets (the test suite runs it)
#
# Before the stages it sets up the machine: the carried wheels installed into .site (skipped when
# deepspeed is importable), TORCH_CUDA_ARCH_LIST at the card's own arch, FusedAdam built once into
# .torch_extensions (both kept between calls to a machine still warm). For each stage $OUT gets
# STAGE.md (its tables) and STAGE.tar.gz (JSON, job logs, the runs' metrics; no weights), and
# gpu_run.log gets the whole console: at most 7 files, inside the device tool's 8.
# A stage that fails or runs out of budget still writes both files; the next stage runs; the exit code
# is then 1. Rerunning a savings stage on the same machine resumes its finished runs.
#
# Environment: OUT (default bench/runs/gpu_run/out), GPU_RUN_WORK (runs and data of the stages, default
# bench/runs/gpu_run), PYTHON (default .venv/bin/python where `make venv` made it, else python3, as on
# the GPU machine), THROUGHPUT_BUDGET_S and SAVINGS_BUDGET_S (seconds; see the sizes below).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

DEEPSPEED=deepspeed==0.19.8
# DeepSpeed's dependencies the GPU machine's image lacks (shared/reference/gpu.md), as binary wheels for
# its Python 3.12 on x86-64.
WHEELS=(hjson==3.1.0 pydantic==2.13.4 pydantic_core==2.46.4 annotated-types==0.7.0 typing-inspection==0.4.2)

TINY=0
if [[ ${1:-} == --tiny ]]; then
    TINY=1
    shift
fi
if [[ $# == 0 ]]; then
    echo "usage: bench/gpu_run.sh [--tiny] prepare | STAGE... (throughput, savings FAMILIES, all)" >&2
    exit 2
fi

if [[ -z ${PYTHON:-} ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=$ROOT/.venv/bin/python; else PYTHON=python3; fi
fi
WORK=$(mkdir -p "${GPU_RUN_WORK:-bench/runs/gpu_run}" && cd "${GPU_RUN_WORK:-bench/runs/gpu_run}" && pwd)
OUT=$(mkdir -p "${OUT:-$WORK/out}" && cd "${OUT:-$WORK/out}" && pwd)
export PYTHONPATH=$ROOT/.site:$ROOT${PYTHONPATH:+:$PYTHONPATH}
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$ROOT/.torch_extensions}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1

if [[ $TINY == 1 ]]; then
    # The tiny presets run on the CPU even where a GPU is, so that the peak they measure is the CPU's.
    export DS_ACCELERATOR=cpu CUDA_VISIBLE_DEVICES="" GLOO_SOCKET_IFNAME=${GLOO_SOCKET_IFNAME:-lo}
    PRESET=tiny
    DATA=$WORK/tiny-data
    THROUGHPUT_BUDGET_S=${THROUGHPUT_BUDGET_S:-900}
    SAVINGS_BUDGET_S=${SAVINGS_BUDGET_S:-900}
else
    PRESET=gpu
    # The savings gpu preset's corpus (bench/code_corpus.py, about 15M tokens at a vocabulary of 8192),
    # tokenized here and carried, as in the first GPU run; throughput reads it too (its ids fit every
    # vocabulary).
    DATA=$ROOT/.gpu_data/code
    # Sized from shared/reference/gpu.md and the first GPU run (bench/HISTORY.md) so that a command, set-up
    # included (about 1 minute on a fresh machine), stays under 8 minutes. Throughput: a 350M job takes
    # about 30 s beyond its steps (start-up, evaluation, checkpoint, export), a first compilation of a
    # block about as much again; a job starts only while the longest so far still fits, and one past the
    # budget by 30 s is killed, so the stage ends by 330 + 30 s. Savings: one family, 4 jobs sharing the
    # GPU, is 2.5-4 minutes by the first run's job times (both at once 5-9); at 390 s a stopped job has
    # 30 s to save and end, and the command still ends by 8 minutes.
    THROUGHPUT_BUDGET_S=${THROUGHPUT_BUDGET_S:-330}
    SAVINGS_BUDGET_S=${SAVINGS_BUDGET_S:-390}
fi

log() { echo "[gpu_run $(date +%H:%M:%S)] $*"; }

prepare() {
    if [[ $TINY == 1 ]]; then
        prepare_data
        return
    fi
    # DeepSpeed is an sdist: installed there without building any op (DS_BUILD_OPS unset), which compile
    # just in time on the GPU machine
    mkdir -p .whl
    "$PYTHON" -m pip download -q --no-deps -d .whl "$DEEPSPEED"
    "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl "${WHEELS[@]}"
    prepare_data
    # The device tool sends the working tree (tracked and untracked files git does not ignore) with the
    # carried folders, 64 MiB in all.
    local tree carried
    tree=$(git ls-files -z --cached --others --exclude-standard | du -cb --files0-from=- | tail -1 | cut -f1)
    carried=$(du -cb .whl .gpu_data | tail -1 | cut -f1)
    log "to carry: .whl and .gpu_data $((carried >> 20)) MiB, with the working tree $(((tree + carried) >> 20)) MiB"
    if ((tree + carried > 64 << 20)); then
        echo "the working tree ($tree bytes) with .whl and .gpu_data ($carried bytes) is over the device tool's 64 MiB" >&2
        return 1
    fi
}

prepare_data() {
    if [[ -f $DATA/meta.json ]]; then
        log "data: $DATA already prepared"
        return
    fi
    local corpus=$WORK/corpus-$PRESET
    rm -rf "$corpus"
    if [[ $TINY == 1 ]]; then
        # this checkout's own sources: a few hundred kB, tokenized in seconds at the tiny presets' vocabulary
        "$PYTHON" -c 'import sys; sys.path.insert(0, "bench"); from pathlib import Path; from code_corpus import write_corpus; print(write_corpus(Path(sys.argv[1]), 1.0, Path("ligo_ds")))' "$corpus"
        "$PYTHON" -m ligo_ds prepare --source "$corpus" --out "$DATA" --vocab-size 320 --val-fraction 0.1 --force
    else
        # A share of 0.22 (of code_corpus.py's default 0.43): about 15M training tokens here, 30 MB, so the
        # data and the wheels travel within the device tool's 64 MiB; a savings run reads 8.2M of them.
        "$PYTHON" bench/code_corpus.py "$corpus" --share 0.22
        "$PYTHON" -m ligo_ds prepare --source "$corpus" --out "$DATA" --force
    fi
    rm -rf "$corpus"
}

setup() {
    log "setup: $PRESET presets, python $PYTHON, results in $OUT"
    # What runs there, said once; it is also the check that deepspeed imports.
    local versions='import deepspeed, torch, transformers; print("torch", torch.__version__, "deepspeed", deepspeed.__version__, "transformers", transformers.__version__, "| cuda:", torch.cuda.get_device_name() if torch.cuda.is_available() else "none")'
    if ! "$PYTHON" -c "$versions" 2>/dev/null; then
        if [[ $TINY == 1 ]]; then
            echo "deepspeed, torch or transformers does not import in $PYTHON: build the venv (make venv) or set PYTHON" >&2
            "$PYTHON" -c "$versions"
            return 1
        fi
        if ! compgen -G ".whl/deepspeed-*.tar.gz" >/dev/null; then
            echo "no .whl/deepspeed-*.tar.gz: run bench/gpu_run.sh prepare where PyPI is reachable, and carry .whl" >&2
            return 1
        fi
        local began=$SECONDS
        # --upgrade: a .site left by an install that broke off is replaced, not merged into
        "$PYTHON" -m pip install -q --no-index --no-deps --upgrade --target .site .whl/*.whl
        "$PYTHON" -m pip install -q --no-index --no-deps --upgrade --no-build-isolation --target .site \
            .whl/deepspeed-*.tar.gz
        log "installed .whl into .site in $((SECONDS - began)) s"
        "$PYTHON" -c "$versions"
    fi
    if [[ ! -f $DATA/meta.json ]]; then
        if [[ $TINY == 1 ]]; then
            prepare_data
        else
            echo "no $DATA/meta.json: run bench/gpu_run.sh prepare here first, and carry .gpu_data" >&2
            return 1
        fi
    fi
    if [[ $TINY == 1 ]]; then
        log "setup: TORCH_CUDA_ARCH_LIST and FusedAdam skipped (tiny: the CPU)"
        return
    fi
    if [[ ${DS_ACCELERATOR:-cuda} != cuda ]]; then
        echo "DS_ACCELERATOR=$DS_ACCELERATOR: expected cuda (or unset) on the GPU machine; --tiny runs on the CPU" >&2
        return 1
    fi
    # The image's own value ("9.0a") breaks DeepSpeed 0.19.8's op builder (int("0a")): the card's
    # major.minor alone, which is what FusedAdam needs.
    TORCH_CUDA_ARCH_LIST=$("$PYTHON" -c 'import torch; assert torch.cuda.is_available(), "no CUDA device; use --tiny on a CPU machine"; print("%d.%d" % torch.cuda.get_device_capability())')
    export TORCH_CUDA_ARCH_LIST
    local began=$SECONDS
    "$PYTHON" -c 'from deepspeed.ops.op_builder import FusedAdamBuilder; FusedAdamBuilder().load()'
    log "setup: TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST, FusedAdam ready in $((SECONDS - began)) s (built once into $TORCH_EXTENSIONS_DIR)"
}

FAILED=()

stage_throughput() {
    local dir=$WORK/throughput rc=0
    rm -rf "$dir" && mkdir -p "$dir"
    log "throughput: budget $THROUGHPUT_BUDGET_S s"
    # The script keeps to its budget itself; the timeout is a guard against a hang outside a job.
    timeout -k 20 $((THROUGHPUT_BUDGET_S + 120)) "$PYTHON" bench/throughput.py --preset "$PRESET" --data "$DATA" \
        --budget-s "$THROUGHPUT_BUDGET_S" --json "$dir/throughput.json" --log "$dir/jobs.log" \
        >"$OUT/throughput.md" || rc=$?
    cat "$OUT/throughput.md"
    tar -czf "$OUT/throughput.tar.gz" -C "$dir" .
    if [[ $rc != 0 ]]; then
        FAILED+=("throughput (exit $rc)")
    fi
}

stage_savings() {
    local families=$1 name=savings_${1//,/_} dir=$WORK/savings rc=0
    mkdir -p "$dir"
    log "savings $families: budget $SAVINGS_BUDGET_S s"
    # Under timeout the study's jobs share its process group: at the budget each gets SIGTERM (a
    # pretraining job then saves a checkpoint, which a rerun on this machine resumes from).
    timeout -k 30 "$SAVINGS_BUDGET_S" "$PYTHON" bench/savings.py --preset "$PRESET" --families "$families" \
        --data "$DATA" --out "$dir" >"$OUT/$name.md" || rc=$?
    if [[ $rc == 124 || $rc == 137 ]]; then
        echo "stopped at its budget of $SAVINGS_BUDGET_S s: the runs that finished are in $name.tar.gz" \
            "(ligo-ds report RUN_DIR... makes their table)" >>"$OUT/$name.md"
    fi
    cat "$OUT/$name.md"
    # The job log and each job's own log, and of each family everything but weights, optimizer state and
    # event files: metrics, configs, job records, reports.
    local parts=("$PRESET/jobs.log" "$PRESET/logs")
    for family in ${families//,/ }; do parts+=("$PRESET/$family"); done
    tar -czf "$OUT/$name.tar.gz" -C "$dir" --ignore-failed-read --exclude=checkpoints --exclude='*.safetensors' \
        --exclude=tb "${parts[@]}"
    if [[ $rc != 0 ]]; then
        FAILED+=("savings $families (exit $rc)")
    fi
}

if [[ $1 == prepare ]]; then
    prepare
    exit 0
fi

exec > >(tee -a "$OUT/gpu_run.log") 2>&1
TEE=$!
# tee writes the log's end after the script's last line: wait for it, so the file is whole when we return
trap 'exec >&- 2>&-; wait $TEE' EXIT
STAGES=()
while [[ $# -gt 0 ]]; do
    case $1 in
        throughput) STAGES+=(throughput) ;;
        savings)
            if [[ ! ${2:-} =~ ^(gpt2|llama)(,(gpt2|llama))?$ ]]; then
                echo "expected the families after savings: gpt2, llama or gpt2,llama, got '${2:-}'" >&2
                exit 2
            fi
            STAGES+=("savings:$2")
            shift
            ;;
        all) STAGES+=(throughput savings:gpt2 savings:llama) ;;
        *)
            echo "unknown stage $1: expected throughput, savings FAMILIES, all (or prepare alone)" >&2
            exit 2
            ;;
    esac
    shift
done

START=$SECONDS
setup
for stage in "${STAGES[@]}"; do
    began=$SECONDS
    case $stage in
        throughput) stage_throughput ;;
        savings:*) stage_savings "${stage#savings:}" ;;
    esac
    log "${stage/:/ }: $((SECONDS - began)) s"
done
log "all stages: $((SECONDS - START)) s; files in $OUT: $(cd "$OUT" && ls | tr '\n' ' ')"
if [[ ${#FAILED[@]} -gt 0 ]]; then
    log "not complete: ${FAILED[*]}"
    exit 1
fi
