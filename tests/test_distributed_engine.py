"""distributed/engine.py: models built under ZeRO-3 in the run's dtype, and DeepSpeed's fused Adam built
under the arch lists CUDA images set."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from ligo_ds import ConfigError
from ligo_ds.distributed import engine

from conftest import TINY
from procs import free_port, job_env

ZERO3_BUILD = """
import json, sys
import torch, deepspeed
from deepspeed.accelerator import get_accelerator
from ligo_ds.distributed import engine
from ligo_ds.model.config import ModelConfig
from ligo_ds.model.decoder import Decoder

if sys.argv[1] == "no-fp16":  # as on a CPU without AVX512-FP16 / AMX-FP16 (AMD Zen 4, say)
    type(get_accelerator()).is_fp16_supported = lambda self: False
deepspeed.init_distributed("gloo")
cfg = ModelConfig.from_hf(json.loads(sys.argv[2]))
built = {}
for name, bf16, dtype in [("fp32", False, torch.float32), ("bf16", True, torch.bfloat16)]:
    ds = {"train_micro_batch_size_per_gpu": 1, "bf16": {"enabled": bf16}, "zero_optimization": {"stage": 3}}
    model = engine.build_model(lambda: Decoder(cfg), ds, dtype)
    built[name] = sorted({str(p.ds_tensor.dtype) for p in model.parameters()})
try:  # a config that disagrees with the run's dtype is refused, not trained in the config's dtype
    engine.build_model(lambda: Decoder(cfg), {"train_micro_batch_size_per_gpu": 1, "bf16": {"enabled": True},
                                                   "zero_optimization": {"stage": 3}}, torch.float32)
    built["mismatch"] = "built"
except RuntimeError as e:
    built["mismatch"] = str(e)
print(json.dumps(built))
"""


@pytest.mark.multiproc
@pytest.mark.parametrize("accelerator", ["as-is", "no-fp16"])
def test_zero3_builds_in_the_runs_dtype(accelerator):
    """DeepSpeed 0.19.8's zero.Init drops an explicit dtype=float32 where the accelerator reports no fp16 and
    builds bf16 weights; an fp32 ZeRO-3 run must still start from fp32 weights, on every CPU."""
    env = job_env(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    result = subprocess.run(
        [sys.executable, "-c", ZERO3_BUILD, accelerator, json.dumps(TINY)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    built = json.loads(result.stdout.strip().splitlines()[-1])
    assert built["fp32"] == ["torch.float32"]
    assert set(built["bf16"]) <= {"torch.bfloat16", "torch.float32"} and "torch.bfloat16" in built["bf16"]
    assert "for a torch.float32 run" in built["mismatch"] and "'enabled': True" in built["mismatch"]


def _deepspeed_gencode(monkeypatch, arch_list: str) -> list[str]:
    """What DeepSpeed's own op builder makes of an arch list (its cross-compile path runs on any machine)."""
    from deepspeed.ops.op_builder.fused_adam import FusedAdamBuilder

    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", arch_list)
    return FusedAdamBuilder().compute_capability_args()


@pytest.mark.parametrize(
    "user, fixed",
    [
        ("9.0a", "9.0"),
        ("8.0;9.0a", "8.0;9.0"),
        ("8.0 9.0a+PTX", "8.0;9.0+PTX"),
        ("9.0;9.0a;10.0f", "9.0;10.0"),
    ],
)
def test_arch_specific_entries_are_rewritten_so_deepspeed_builds_fused_adam(monkeypatch, user, fixed):
    with pytest.raises(ValueError, match="invalid literal for int"):  # the bug in DeepSpeed 0.19.8
        _deepspeed_gencode(monkeypatch, user)
    assert engine.deepspeed_arch_list(user) == fixed
    built = {m for arg in _deepspeed_gencode(monkeypatch, fixed) for m in re.findall(r"sm_(\d+)", arg)}
    assert built == {major + minor for major, minor in re.findall(r"(\d+)\.(\d+)", user)}  # every arch asked for


@pytest.mark.parametrize("plain", ["9.0", "8.0;8.6+PTX", "7.5;8.0;9.0;10.0+PTX"])
def test_parsable_arch_lists_are_left_alone(monkeypatch, capsys, plain):
    assert engine.deepspeed_arch_list(plain) == plain
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", plain)
    with engine.arch_list_for_deepspeed(rank=0, on_cuda=True):
        assert os.environ["TORCH_CUDA_ARCH_LIST"] == plain
    assert capsys.readouterr().out == ""


def test_arch_list_is_fixed_only_while_deepspeed_builds(monkeypatch, capsys):
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "8.0;9.0a")
    with engine.arch_list_for_deepspeed(rank=0, on_cuda=False):  # CPU: nothing is built for CUDA
        assert os.environ["TORCH_CUDA_ARCH_LIST"] == "8.0;9.0a"
    with engine.arch_list_for_deepspeed(rank=0, on_cuda=True):
        assert os.environ["TORCH_CUDA_ARCH_LIST"] == "8.0;9.0"
    assert os.environ["TORCH_CUDA_ARCH_LIST"] == "8.0;9.0a"
    assert "'8.0;9.0a'" in capsys.readouterr().out


def test_arch_list_that_is_no_compute_capability_is_refused_by_name():
    with pytest.raises(ConfigError, match=r"entry 'Hopper' is not a compute capability like 9\.0"):
        engine.deepspeed_arch_list("8.0;Hopper")
