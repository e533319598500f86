"""DeepSpeed pretraining for real: several CPU processes over gloo, every ZeRO stage, every launcher."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import transformers
from procs import command, free_port, job_env, kill_tree, ligo

from ligo_ds.data import PrepareOptions, TokenData, prepare, window_batch
from ligo_ds.rundir import read_metrics

pytestmark = pytest.mark.multiproc

TINY = dict(model_type="llama", hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=320, max_position_embeddings=64, tie_word_embeddings=False)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("pretrain")
    corpus = root / "corpus"
    corpus.mkdir()
    for i in range(80):
        (corpus / f"{i:03d}.txt").write_text(f"def function_{i}(a, b):\n    return a * {i} - b ** {i % 5}\n" * 6)
    prepare(PrepareOptions(source=str(corpus), out=str(root / "data"), vocab_size=320, val_fraction=0.1))
    (root / "tiny.json").write_text(json.dumps(TINY))
    return root


def train_args(setup, out, *extra):
    return ["pretrain", "--model", str(setup / "tiny.json"), "--data", str(setup / "data"), "--out", str(out),
            "--seq-len", "32", "--lr", "3e-3", "--warmup-steps", "2", "--log-every", "1", "--eval-every", "3",
            "--eval-samples", "6", "--seed", "7", *extra]


def losses(run_dir):
    rows = read_metrics(run_dir / "metrics.jsonl")
    return [r.get("loss") for r in rows], [r.get("val_loss") for r in rows], [r["step"] for r in rows]


@pytest.fixture(scope="module")
def reference(setup):
    """One process, ZeRO-2, micro-batch 4: the global batch the 2-rank runs reproduce with 2 x 2."""
    out = setup / "ref"
    ligo("single", 1, train_args(setup, out, "--max-steps", "6", "--micro-batch", "4", "--ds-config", "zero2"))
    return out


@pytest.mark.parametrize("stage", ["zero1", "zero2", "zero3", "zero3_offload"])
def test_two_ranks_match_one_process(setup, reference, stage):
    out = setup / f"two_{stage}"
    ligo("torchrun", 2, train_args(setup, out, "--max-steps", "6", "--micro-batch", "2", "--ds-config", stage))
    ref_loss, ref_val, ref_steps = losses(reference)
    loss, val, steps = losses(out)
    assert steps == ref_steps == [0, 1, 2, 3, 4, 5, 6]
    # Same samples, same init, same schedule; only the order of float32 sums differs (a mean of two
    # rank means instead of one mean, gradient all-reduce), which moves losses by ~1e-6 relative.
    np.testing.assert_allclose([x for x in loss if x is not None], [x for x in ref_loss if x is not None], rtol=1e-4)
    np.testing.assert_allclose([x for x in val if x is not None], [x for x in ref_val if x is not None], rtol=1e-4)
    assert loss[-1] < loss[1], "training lowers the loss"
    ds = json.loads((out / "ds_config.json").read_text())
    assert ds["train_batch_size"] == 4 and ds["gradient_clipping"] == 1.0
    assert ds["zero_optimization"]["stage"] == int(stage[4])


def test_stop_and_resume_equals_uninterrupted(setup):
    args = ["--max-steps", "40", "--micro-batch", "2", "--ds-config", "zero3", "--save-every", "5", "--eval-every", "10"]
    straight = setup / "straight"
    ligo("torchrun", 2, train_args(setup, straight, *args))

    broken = setup / "broken"
    proc = subprocess.Popen(command("torchrun", 2, train_args(setup, broken, *args)), env=job_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 180
    while time.time() < deadline:  # kill once a checkpoint beyond the first exists, mid-run
        latest = broken / "checkpoints" / "latest"
        if latest.is_file() and latest.read_text().strip() not in ("step5",):
            break
        time.sleep(0.05)
    kill_tree(proc.pid)
    proc.wait()
    killed_at = (broken / "checkpoints" / "latest").read_text().strip()
    assert killed_at != "step40", "the job was meant to be killed before it finished"
    result = ligo("torchrun", 2, train_args(setup, broken, *args))
    assert f"from checkpoint {killed_at}" in result.stdout
    assert losses(broken) == losses(straight)
    for name in ("model.safetensors",):
        a = (straight / "hf" / name).read_bytes()
        assert a == (broken / "hf" / name).read_bytes(), "same final weights"


def test_hf_export_reproduces_reported_val_loss(setup):
    out = setup / "export_z3"
    ligo("torchrun", 2, train_args(setup, out, "--max-steps", "4", "--micro-batch", "2", "--ds-config", "zero3"))
    reported = read_metrics(out / "metrics.jsonl")[-1]["val_loss"]
    model = transformers.AutoModelForCausalLM.from_pretrained(out / "hf").eval()
    val = TokenData(setup / "data").tokens("val")
    ids, targets = window_batch(val, np.arange(6) * 32, 32)
    with torch.no_grad():
        logits = model(ids).logits
    ours = F.cross_entropy(logits.flatten(0, 1), targets.flatten()).item()
    assert ours == pytest.approx(reported, rel=1e-5)
    # `ligo-ds export` of the same checkpoint gives the same weights, from the shards on disk alone.
    ligo("single", 1, ["export", str(out), "--out", str(out / "exported")])
    again = transformers.AutoModelForCausalLM.from_pretrained(out / "exported").eval()
    with torch.no_grad():
        torch.testing.assert_close(again(ids).logits, logits, atol=1e-6, rtol=0)


@pytest.mark.parametrize("launcher", ["deepspeed", "mpirun"])
def test_launchers_agree(setup, reference, launcher):
    if launcher == "mpirun" and shutil.which("mpirun") is None:
        pytest.fail("mpirun is missing: .ci/run installs openmpi-bin; run `make test` or install it")
    out = setup / f"launch_{launcher}"
    result = ligo(launcher, 2, train_args(setup, out, "--max-steps", "6", "--micro-batch", "2", "--ds-config", "zero2"))
    assert json.loads((out / "config.json").read_text())["launcher"] == launcher
    assert json.loads((out / "config.json").read_text())["world_size"] == 2, result.stdout[-2000:]
    np.testing.assert_allclose([x for x in losses(out)[0] if x], [x for x in losses(reference)[0] if x], rtol=1e-4)


def test_continue_from_hf_checkpoint(setup, reference):
    """An HF directory as --model continues that model: its first validation equals the source's last."""
    out = setup / "continued"
    ligo("single", 1, train_args(setup, out, "--model", str(reference / "hf"), "--max-steps", "2",
                                 "--micro-batch", "4"))
    first = read_metrics(out / "metrics.jsonl")[0]
    assert first["val_loss"] == pytest.approx(read_metrics(reference / "metrics.jsonl")[-1]["val_loss"], rel=1e-6)


def test_rerun_with_different_options_is_refused(setup, reference):
    before = {p.name: p.read_bytes() for p in reference.iterdir() if p.is_file()}
    result = ligo("single", 1, train_args(setup, reference, "--max-steps", "6", "--micro-batch", "4",
                                          "--lr", "1e-3"), check=False)
    assert result.returncode == 2
    assert "belongs to a different run; refusing to resume it. Differences: lr: 0.003 in the run, 0.001 now" \
           in result.stdout
    assert {p.name: p.read_bytes() for p in reference.iterdir() if p.is_file()} == before


@pytest.mark.parametrize("change, message", [
    (dict(max_position_embeddings=16), "--seq-len 32 exceeds the model's 16 positions"),
    (dict(vocab_size=300), "has a vocabulary of 320 tokens, larger than the model's vocab_size 300"),
])
def test_bad_model_for_data(setup, tmp_path, change, message):
    (tmp_path / "m.json").write_text(json.dumps({**TINY, **change}))
    result = ligo("single", 1, train_args(setup, tmp_path / "run", "--model", str(tmp_path / "m.json"),
                                          "--max-steps", "1"), check=False)
    assert result.returncode == 2 and message in result.stdout
    assert not (tmp_path / "run").exists(), "nothing is written for a refused run"


def test_config_file_with_typo(setup, tmp_path):
    (tmp_path / "run.json").write_text(json.dumps({"max_steps": 3, "warmup_step": 1}))
    result = ligo("single", 1, train_args(setup, tmp_path / "run", "--config", str(tmp_path / "run.json")),
                  check=False)
    assert result.returncode == 2
    assert "unknown key 'warmup_step' (did you mean 'warmup_steps'?)" in result.stdout


ZERO3_BUILD = """
import json, sys
import torch, deepspeed
from deepspeed.accelerator import get_accelerator
from ligo_ds import distributed
from ligo_ds.config import ModelConfig
from ligo_ds.model import Decoder

if sys.argv[1] == "no-fp16":  # as on a CPU without AVX512-FP16 / AMX-FP16 (AMD Zen 4, say)
    type(get_accelerator()).is_fp16_supported = lambda self: False
deepspeed.init_distributed("gloo")
cfg = ModelConfig.from_hf(json.loads(sys.argv[2]))
built = {}
for name, bf16, dtype in [("fp32", False, torch.float32), ("bf16", True, torch.bfloat16)]:
    ds = {"train_micro_batch_size_per_gpu": 1, "bf16": {"enabled": bf16}, "zero_optimization": {"stage": 3}}
    model = distributed.build_model(lambda: Decoder(cfg), ds, dtype)
    built[name] = sorted({str(p.ds_tensor.dtype) for p in model.parameters()})
try:  # a config that disagrees with the run's dtype is refused, not trained in the config's dtype
    distributed.build_model(lambda: Decoder(cfg), {"train_micro_batch_size_per_gpu": 1, "bf16": {"enabled": True},
                                                   "zero_optimization": {"stage": 3}}, torch.float32)
    built["mismatch"] = "built"
except RuntimeError as e:
    built["mismatch"] = str(e)
print(json.dumps(built))
"""


@pytest.mark.parametrize("accelerator", ["as-is", "no-fp16"])
def test_zero3_builds_in_the_runs_dtype(accelerator):
    """DeepSpeed 0.19.8's zero.Init drops an explicit dtype=float32 where the accelerator reports no fp16 and
    builds bf16 weights; an fp32 ZeRO-3 run must still start from fp32 weights, on every CPU."""
    env = job_env(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    result = subprocess.run([sys.executable, "-c", ZERO3_BUILD, accelerator, json.dumps(TINY)], env=env,
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    built = json.loads(result.stdout.strip().splitlines()[-1])
    assert built["fp32"] == ["torch.float32"]
    assert set(built["bf16"]) <= {"torch.bfloat16", "torch.float32"} and "torch.bfloat16" in built["bf16"]
    assert "for a torch.float32 run" in built["mismatch"] and "'enabled': True" in built["mismatch"]
