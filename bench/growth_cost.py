"""Operator size, materialisation time and peak memory at real model shapes (random weights, CPU).

    python bench/growth_cost.py            # GPT-2 124M -> 350M, Llama 12L/768 -> 24L/1536 (GQA)

Each case runs in a fresh process so its peak resident memory is its own.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = {
    "gpt2-124M -> gpt2-350M": (
        dict(model_type="gpt2", n_layer=12, n_embd=768, n_head=12, n_positions=1024, vocab_size=50257),
        dict(model_type="gpt2", n_layer=24, n_embd=1024, n_head=16, n_positions=1024, vocab_size=50257),
    ),
    "llama 12L/768 -> 24L/1536 (GQA)": (
        dict(
            model_type="llama",
            num_hidden_layers=12,
            hidden_size=768,
            num_attention_heads=12,
            num_key_value_heads=4,
            intermediate_size=2048,
            vocab_size=32000,
            max_position_embeddings=2048,
        ),
        dict(
            model_type="llama",
            num_hidden_layers=24,
            hidden_size=1536,
            num_attention_heads=24,
            num_key_value_heads=8,
            intermediate_size=4096,
            vocab_size=32000,
            max_position_embeddings=2048,
        ),
    ),
}


def measure(src_hf: dict, tgt_hf: dict, order: str, out_dir: str) -> dict:
    import torch

    from ligo_ds import ModelConfig
    from ligo_ds.growth import GrowthSpec, materialise, operator_from, write_grown
    from ligo_ds.model.decoder import Decoder

    torch.manual_seed(0)
    src = Decoder(ModelConfig.from_hf(src_hf))
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    op = operator_from(src, ModelConfig.from_hf(tgt_hf), GrowthSpec(width_init="random", order=order))
    t_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    model = materialise(op)
    t_mat = time.perf_counter() - t0
    del model
    t0 = time.perf_counter()
    write_grown(op, Path(out_dir) / "hf")
    t_write = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        **op.param_counts(),
        "order": order,
        "build_s": t_build,
        "materialise_s": t_mat,
        "stream_to_hf_s": t_write,
        "peak_rss_gib": peak / 2**20,
        "source_rss_gib": base_rss / 2**20,
    }


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        src, tgt, order = json.loads(sys.argv[2])
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps(measure(src, tgt, order, tmp)))
        return 0
    rows = []
    for name, (src, tgt) in CASES.items():
        for order in ("paper", "official"):
            out = subprocess.run(
                [sys.executable, __file__, "--child", json.dumps([src, tgt, order])],
                capture_output=True,
                text=True,
                check=True,
            )
            rows.append({"case": name, **json.loads(out.stdout.strip().splitlines()[-1])})
            print(f"  {name} ({order}) done", file=sys.stderr)
    print(
        "| growth | order | operator params | source | target | build (s) | materialise (s) | "
        "stream to HF (s) | peak RSS (GiB) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['case']} | {r['order']} | {r['operator']:,} | {r['source']:,} | {r['target']:,} | "
            f"{r['build_s']:.1f} | {r['materialise_s']:.1f} | {r['stream_to_hf_s']:.1f} | {r['peak_rss_gib']:.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
