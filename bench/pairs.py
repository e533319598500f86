"""The published pairs in small: how far each grown model starts from its small model.

For each pair's analogue (its head_dim ratio, head, kv-head and layer changes, rope bases; widths scaled
down): pretrain the small model, then grow it twice with no training phase to speak of: with the
function-preserving initialisation alone (net2net + zero, no fit) and with a LiGO fit of --fit-steps. The
table gives the small model's validation loss, each grown model's at step 0 of its training phase, and the
gaps. A start above the small model is what the fit has to recover: the cases no initialisation keeps.

    python bench/pairs.py                    # about 10 min on 2 cores
    python bench/pairs.py --pairs llama3.2 --small-steps 100 --fit-steps 20
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LLAMA3 = {"rope_type": "llama3", "factor": 4.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0}


def llama(kind, hidden, inter, layers, heads, kv, head_dim, theta, **extra) -> dict:
    return {
        **dict(
            model_type=kind,
            hidden_size=hidden,
            intermediate_size=inter,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=kv,
            head_dim=head_dim,
            tie_word_embeddings=True,
            max_position_embeddings=256,
            rope_theta=theta,
        ),
        **extra,
    }


def pythia(hidden, layers, heads) -> dict:
    return dict(
        model_type="gpt_neox",
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=256,
        rotary_pct=0.25,
        rotary_emb_base=10000,
        tie_word_embeddings=False,
    )


def gemma3(hidden, inter, layers, heads, kv, window, **extra) -> dict:
    return dict(
        model_type="gemma3_text",
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        head_dim=32,
        query_pre_attn_scalar=32,
        max_position_embeddings=256,
        sliding_window=window,
        sliding_window_pattern=3,
        rope_theta=1e6,
        rope_local_base_freq=1e4,
        **extra,
    )


# name -> (small, large): the real pair's ratios at head_dim 16 -> 32 (64 -> 128 in the released models);
# head_dim 16 where the family keeps it (Qwen3, OLMo 2, Pythia 160M -> 410M), 32 for Gemma's 256.
PAIRS = {
    "smollm2-360m-1.7b": (llama("llama", 240, 640, 8, 15, 5, 16, 1e5), llama("llama", 512, 2048, 6, 32, 32, 16, 1.3e5)),
    "qwen2.5-0.5b-1.5b": (llama("qwen2", 224, 1216, 4, 14, 2, 16, 1e6), llama("qwen2", 384, 2240, 5, 12, 2, 32, 1e6)),
    "llama3.2-1b-3b": (
        llama("llama", 256, 1024, 4, 16, 4, 16, 5e5, rope_scaling={**LLAMA3, "original_max_position_embeddings": 128}),
        llama("llama", 384, 1024, 7, 12, 4, 32, 5e5, rope_scaling={**LLAMA3, "original_max_position_embeddings": 128}),
    ),
    # The ones a function-preserving start keeps exactly (integer ratios): their gap is what rounding leaves.
    "qwen3-0.6b-1.7b": (llama("qwen3", 128, 384, 4, 16, 8, 16, 1e6), llama("qwen3", 256, 768, 4, 16, 8, 16, 1e6)),
    "olmo2-1b-7b": (
        llama("olmo2", 256, 1024, 4, 16, 16, 16, 5e5, tie_word_embeddings=False),
        llama("olmo2", 512, 1376, 8, 32, 32, 16, 5e5, tie_word_embeddings=False),
    ),
    "pythia-160m-410m": (pythia(192, 3, 12), pythia(256, 6, 16)),
    "pythia-410m-1b": (pythia(256, 6, 16), pythia(512, 4, 8)),
    # 26 -> 34 layers (a full one every sixth) as 5 -> 8 (every third), window 512 -> 1024 as 64 -> 128 (the
    # sequences are 128 long), the global RoPE scaled x8 in the larger one.
    "gemma3-1b-4b": (
        gemma3(144, 864, 5, 4, 1, 64),
        gemma3(320, 1280, 8, 8, 4, 128, rope_scaling={"rope_type": "linear", "factor": 8.0}),
    ),
}


def ligo(*args: str, log: Path) -> None:
    env = {**os.environ, "DS_ACCELERATOR": os.environ.get("DS_ACCELERATOR", "cpu")}
    with open(log, "a") as f:
        result = subprocess.run([sys.executable, "-m", "ligo_ds", *args], stdout=f, stderr=f, env=env, cwd=ROOT)
    if result.returncode != 0:
        raise SystemExit(f"ligo-ds {args[0]} failed (exit {result.returncode}); see {log}")


def val_losses(metrics: Path) -> list[float]:
    return [json.loads(line)["val_loss"] for line in metrics.read_text().splitlines() if '"val_loss"' in line]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "bench" / "runs" / "pairs"))
    p.add_argument("--pairs", default=",".join(PAIRS), help="comma-separated prefixes of: " + ", ".join(PAIRS))
    p.add_argument("--small-steps", type=int, default=300)
    p.add_argument("--fit-steps", type=int, default=60)
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    log = out / "log.txt"
    data = out / "data"
    if not (data / "meta.json").is_file():  # the default offline corpus (the standard library's code)
        sample = ["--tokenizer-sample-bytes", "5M"]
        ligo("prepare", "--out", str(data), "--vocab-size", "2048", "--val-fraction", "0.01", *sample, log=log)
    vocab = json.loads((data / "meta.json").read_text())["vocab_size"]
    common = [
        "--data",
        str(data),
        "--seq-len",
        "128",
        "--micro-batch",
        "8",
        "--eval-every",
        "50",
        "--eval-samples",
        "64",
    ]
    rows = []
    for name, (small, large) in PAIRS.items():
        if not any(name.startswith(x) for x in a.pairs.split(",")):
            continue
        d = out / name
        d.mkdir(exist_ok=True)
        for cfg, file in ((small, "small.json"), (large, "large.json")):
            (d / file).write_text(json.dumps({**cfg, "vocab_size": vocab}))
        steps = ["--max-steps", str(a.small_steps), "--warmup-steps", "30", "--lr", "2e-3", "--save-every", "1000"]
        ligo("pretrain", "--model", str(d / "small.json"), "--out", str(d / "small"), *common, *steps, log=log)
        grown = {}
        starts = (
            ("net2net_zero", ["--fit-steps", "0", "--init-noise", "0"]),
            # the operator warmup it was measured with before the default followed the fit's length
            ("ligo", ["--fit-steps", str(a.fit_steps), "--operator-warmup", "10"]),
        )
        # transformers 5 loads a qwen2 directory's tokenizer as Qwen2Tokenizer, which rebuilds the pipeline around
        # this corpus's BPE: the data's tokens are still the model's, which is all this measurement needs.
        same_tokens = ["--allow-tokenizer-mismatch"] if small["model_type"] == "qwen2" else []
        for method, fit in starts:
            ligo(
                "grow",
                "--source",
                str(d / "small" / "hf"),
                "--target",
                str(d / "large.json"),
                "--out",
                str(d / method),
                *common,
                *fit,
                *same_tokens,
                "--width-init",
                "net2net",
                "--depth-init",
                "zero",
                "--max-steps",
                "1",
                "--warmup-steps",
                "0",
                "--ds-config",
                "zero2",
                log=log,
            )
            grown[method] = val_losses(d / method / "train" / "metrics.jsonl")[0]
        base = val_losses(d / "small" / "metrics.jsonl")[-1]
        rows.append((name, base, grown["net2net_zero"], grown["ligo"]))
    print(f"\nsmall models: {a.small_steps} steps of 8 x 128 tokens; LiGO fit: {a.fit_steps} steps (vocab {vocab})")
    print("| pair | small model val loss | net2net + zero start | gap | LiGO fitted start | gap |")
    print("|---|---|---|---|---|---|")
    for name, base, init, fitted in rows:
        print(f"| {name} | {base:.4f} | {init:.4f} | {init - base:+.4f} | {fitted:.4f} | {fitted - base:+.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
