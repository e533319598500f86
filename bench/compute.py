"""What the Compute options (compute.py: --activation-checkpointing, --loss-chunk, --compile) save and cost,
measured on the CPU in one run, so the time ratios share one machine state.

    python bench/compute.py          # about 3 minutes on 2 cores
    python bench/compute.py --tiny --no-compile   # seconds: the same tables at toy sizes, eager only

Tables:
1. Per block of a Llama-shaped model: the bytes a block holds from its forward to its backward under
   each checkpointing mode, eager and compiled, and a whole training step's forward + backward time, as
   ratios to none (eager).
2. The LM head + loss at a 128k vocabulary: peak tensor memory and forward + backward time of the chunked
   head against F.cross_entropy on whole-batch fp32 logits.

How memory is counted. CPU tensors have no allocator statistics (torch.cuda.max_memory_allocated has no
CPU twin), so `LiveBytes`, a TorchDispatchMode, sees every tensor an op creates and counts its storage
from then until it is freed: the live and peak bytes an allocator would report. Storages that existed
before (parameters, inputs) and views of them are not counted. It sees what eager code allocates, not
the buffers inside compiled (inductor) kernels, so for compiled blocks the bytes are what autograd saves
for the backward (saved_tensors_hooks); for an eager block without checkpointing the two counts agree.
"""

from __future__ import annotations

import argparse
import sys
import time
import weakref
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ligo_ds.model.compute import LOSS_CHUNK, chunked_lm_loss  # noqa: E402
from ligo_ds.model.config import ModelConfig  # noqa: E402
from ligo_ds.model.decoder import Decoder, lm_loss  # noqa: E402

SIZES = {
    # a Llama-shaped model small enough for a CPU step in about a second; the head's table at Llama 3's
    # vocabulary, with 2 chunks of the default size in the batch (a narrow hidden size keeps its matmuls
    # short; the logits' memory does not depend on it)
    "default": dict(
        model=dict(hidden_size=512, intermediate_size=1408, num_attention_heads=8, num_key_value_heads=4),
        layers=4,
        vocab=8192,
        batch=(2, 256),
        loss=dict(tokens=2 * LOSS_CHUNK, hidden=128, vocab=128256, chunks=(LOSS_CHUNK, LOSS_CHUNK // 4)),
        reps=3,
    ),
    "tiny": dict(
        model=dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2),
        layers=2,
        vocab=512,
        batch=(2, 32),
        loss=dict(tokens=96, hidden=32, vocab=4096, chunks=(64, 16)),
        reps=1,
    ),
}
MODES = ("none", "full", "selective")


class LiveBytes(TorchDispatchMode):
    """Bytes of the storages ops create while active, live and at their peak (see the module doc)."""

    def __init__(self, existing: list[torch.Tensor]):
        super().__init__()
        self.existing = {t.untyped_storage().data_ptr() for t in existing}
        self.sizes: dict[int, int] = {}  # data_ptr -> bytes, for storages alive now
        self.live = self.peak = 0

    def _freed(self, ptr: int) -> None:
        self.live -= self.sizes.pop(ptr)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            ptr = storage.data_ptr()
            if ptr in self.existing or ptr in self.sizes or storage.nbytes() == 0:
                continue  # a view, an in-place result, or a parameter's storage
            self.sizes[ptr] = storage.nbytes()
            self.live += storage.nbytes()
            self.peak = max(self.peak, self.live)
            # storages keep their Python object while alive, so this runs when the memory is freed
            weakref.finalize(storage, self._freed, ptr)
        return out

    def held(self, exclude: torch.Tensor) -> int:
        """Bytes created while active and still alive, less `exclude`'s storage (a block's output)."""
        ptr = exclude.untyped_storage().data_ptr()
        return self.live - self.sizes.get(ptr, 0)


def autograd_saved(fn, params) -> tuple[torch.Tensor, int]:
    """fn()'s output and the bytes of the distinct storages autograd saved for its backward, the
    parameters' (and views of them: a linear saves its weight transposed) left out."""
    skip = {p.untyped_storage().data_ptr() for p in params}
    saved: dict[int, int] = {}

    def pack(t):
        if t.untyped_storage().data_ptr() not in skip:
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(saved.values())


def interleaved(steps: dict, reps: int) -> dict:
    """The fastest of `reps` timings of each step, the steps taking turns, so that whatever else the machine
    does slows each of them alike (the minimum is the run least disturbed)."""
    times: dict = {k: [] for k in steps}
    for _ in range(reps):
        for key, step in steps.items():
            t0 = time.perf_counter()
            step()
            times[key].append(time.perf_counter() - t0)
    return {k: min(v) for k, v in times.items()}


def block_rows(size: dict, compile: bool) -> list[dict]:
    cfg = ModelConfig.from_hf(
        dict(
            model_type="llama",
            num_hidden_layers=size["layers"],
            vocab_size=size["vocab"],
            max_position_embeddings=4096,
            tie_word_embeddings=False,
            **size["model"],
        )
    )
    B, T = size["batch"]
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, cfg.vocab_size, (B, T + 1), generator=gen)
    x = torch.randn(B, T, cfg.hidden_size, generator=gen, requires_grad=True)
    models, steps = {}, {}
    for compiled in (False, True) if compile else (False,):
        for mode in MODES:
            torch.manual_seed(0)
            model = models[mode, compiled] = Decoder(cfg, mode)
            if compiled:
                model.compile_blocks()

            def step(model=model):
                model.zero_grad(set_to_none=True)
                model(ids[:, :-1], ids[:, 1:]).backward()

            step()  # warm: compiles the blocks when compiled
            steps[mode, compiled] = step
            print(f"  block: {mode}{' compiled' if compiled else ''} ready", file=sys.stderr)
    seconds = interleaved(steps, size["reps"])
    rows = []
    for (mode, compiled), model in models.items():
        block, rope = model.blocks[0], model.rope(T, None)[model.cfg.layer_type(0)]
        if compiled:
            y, held = autograd_saved(lambda block=block, rope=rope: block(x, rope), model.parameters())
            via_hooks = held
        else:
            tracker = LiveBytes([*model.parameters(), x, *rope])
            with tracker:
                y = block(x, rope)
            held = tracker.held(y)
            via_hooks = None
            if mode == "none":
                via_hooks = autograd_saved(lambda block=block, rope=rope: block(x, rope), model.parameters())[1]
        y.sum().backward()
        rows.append(dict(mode=mode, compiled=compiled, held=held, via_hooks=via_hooks, seconds=seconds[mode, compiled]))
    return rows


def loss_rows(size: dict) -> list[dict]:
    s = size["loss"]
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(s["tokens"], s["hidden"], generator=gen, requires_grad=True)
    w = (0.02 * torch.randn(s["vocab"], s["hidden"], generator=gen)).requires_grad_()
    t = torch.randint(0, s["vocab"], (s["tokens"],), generator=gen)
    ways = {"plain (whole-batch fp32 logits)": lambda: lm_loss(F.linear(h, w)[None], t[None])}
    for chunk in s["chunks"]:
        ways[f"chunked, {chunk} tokens a chunk"] = lambda chunk=chunk: chunked_lm_loss(h[None], w, t[None], chunk)
    steps, peaks = {}, {}
    for name, loss in ways.items():

        def step(loss=loss):
            h.grad = w.grad = None
            loss().backward()

        tracker = LiveBytes([h, w, t])
        with tracker:  # also the warm-up
            step()
        peaks[name], steps[name] = tracker.peak, step
        print(f"  loss: {name} measured", file=sys.stderr)
    seconds = interleaved(steps, size["reps"])
    return [dict(way=name, peak=peaks[name], seconds=seconds[name]) for name in ways]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="toy sizes: the same tables in seconds")
    parser.add_argument("--no-compile", action="store_true", help="leave out the compiled rows (their compilation)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, every core)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    size = SIZES["tiny" if args.tiny else "default"]
    mib = 2**20
    blocks = block_rows(size, compile=not args.no_compile)
    losses = loss_rows(size)

    m, (B, T) = size["model"], size["batch"]
    print(
        f"\nActivation checkpointing: Llama {size['layers']}L, hidden {m['hidden_size']}, "
        f"{m['num_attention_heads']} heads / {m['num_key_value_heads']} kv, MLP {m['intermediate_size']}, "
        f"vocabulary {size['vocab']}; {B} x {T} tokens, fp32, {torch.get_num_threads()} threads\n"
    )
    print("| checkpointing | held per block (MiB) | against none | step fwd+bwd (s) | step time against none |")
    print("|---|---|---|---|---|")
    base = next(r for r in blocks if r["mode"] == "none" and not r["compiled"])
    for r in blocks:
        name = r["mode"] + (", compiled" if r["compiled"] else "")
        how = " (autograd's saved tensors)" if r["compiled"] else ""
        print(
            f"| {name} | {r['held'] / mib:.2f}{how} | {r['held'] / base['held']:.2f} | {r['seconds']:.3f} | "
            f"{r['seconds'] / base['seconds']:.2f} |"
        )
    print(
        f"\nEager none, the same block counted by autograd's saved tensors: {base['via_hooks'] / mib:.2f} MiB "
        f"(the block's input included: {B * T * m['hidden_size'] * 4 / mib:.2f} MiB)"
    )
    s = size["loss"]
    print(f"\nLM head + loss: {s['tokens']} tokens, hidden {s['hidden']}, vocabulary {s['vocab']}, fp32\n")
    print("| head + loss | peak tensor memory (MiB) | against plain | fwd+bwd (s) | time against plain |")
    print("|---|---|---|---|---|")
    plain = losses[0]
    for r in losses:
        print(
            f"| {r['way']} | {r['peak'] / mib:.0f} | {r['peak'] / plain['peak']:.3f} | {r['seconds']:.3f} | "
            f"{r['seconds'] / plain['seconds']:.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
