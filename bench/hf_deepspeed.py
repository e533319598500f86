"""The baseline bench/throughput.py compares against: a Hugging Face transformers model of the same
config handed to DeepSpeed, with the same DeepSpeed config, data, batch and loss as `ligo-ds pretrain`.

    torchrun --nproc_per_node 1 bench/hf_deepspeed.py --model cfg.json --data DATA --ds-config zero2 \
        --micro-batch 8 --seq-len 1024 --steps 30 --out result.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ligo_ds.data.batches import window_batch  # noqa: E402
from ligo_ds.data.order import SampleOrder  # noqa: E402
from ligo_ds.data.reading import TokenData
from ligo_ds.distributed import engine as ds_engine  # noqa: E402
from ligo_ds.distributed import launch
from ligo_ds.distributed.ds_config import FLAG_KEYS, ds_config_path, resolve_ds_config  # noqa: E402
from ligo_ds.model.config import ModelConfig  # noqa: E402
from ligo_ds.model.decoder import lm_loss  # noqa: E402
from ligo_ds.options import load_json  # noqa: E402
from ligo_ds.training.metrics import peak_memory_bytes  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--ds-config", default="zero2")
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--out", required=True)
    parser.add_argument("--local_rank", type=int)
    args = parser.parse_args()

    import transformers

    cfg = ModelConfig.from_file(args.model)
    d = launch.init()
    on_gpu = d.device.type == "cuda"
    bf16 = args.dtype == "bf16" or (args.dtype == "auto" and on_gpu)
    ds = resolve_ds_config(
        load_json(ds_config_path(args.ds_config, "--ds-config"), "ds config"),
        where=args.ds_config,
        micro_batch=args.micro_batch,
        grad_accum=1,
        world_size=d.world_size,
        grad_clip=1.0,
        bf16=bf16,
        lr=3e-4,
        weight_decay=0.1,
        betas=(0.9, 0.95),
        on_gpu=on_gpu,
        # this script's own flags, where it has them; the rest are fixed here
        flags={
            k: "--micro-batch" if k == "micro_batch" else "--dtype" if k == "dtype" else f"{k} (fixed)"
            for k in FLAG_KEYS
        },
    )
    hf_config = transformers.AutoConfig.for_model(**{k: v for k, v in cfg.hf_config.items() if k != "dtype"})
    # Built whole, then partitioned by deepspeed.initialize under ZeRO-3: transformers 5 models cannot be
    # constructed inside a bare deepspeed.zero.Init (HF's route needs HfDeepSpeedConfig and accelerate),
    # and this is what most users of an HF model do on one node.
    model = transformers.AutoModelForCausalLM.from_config(hf_config, attn_implementation="sdpa")
    model = model.to(device=d.device, dtype=torch.bfloat16 if bf16 else torch.float32)
    engine = ds_engine.make_engine(model, ds_engine.param_groups(model, 0.1), ds)
    tokens = TokenData(args.data).tokens("train")
    order = SampleOrder(len(tokens), args.seq_len, 0)
    b, T = args.micro_batch, args.seq_len
    times = []
    for step in range(args.steps):
        start = time.perf_counter()
        ids, targets = window_batch(tokens, order.starts(step * b * d.world_size + d.rank * b, b), T)
        loss = lm_loss(engine(ids.to(d.device)).logits, targets.to(d.device))
        engine.backward(loss)
        engine.step()
        loss.item()  # one sync per step, as ligo_ds's own loop at a logging step
        times.append(time.perf_counter() - start)
    per_step = statistics.median(times[max(1, len(times) // 4) :])
    result = {"tokens_per_s": b * T * d.world_size / per_step, "peak_mem_gb": peak_memory_bytes(d.device) / 2**30}
    if d.is_main:
        Path(args.out).write_text(json.dumps(result))
    launch.barrier()
    return 0


if __name__ == "__main__":
    sys.exit(main())
