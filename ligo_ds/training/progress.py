"""What a training run shows of itself while it runs: metrics.jsonl and TensorBoard (rank 0, metrics.py), the
progress bar, the optional trace of the samples each rank reads, and the training columns of a logged row."""

from __future__ import annotations

import os
from collections.abc import Callable

from ..data.reading import TokenData
from ..distributed import engine as ds_engine
from ..distributed.launch import Dist
from .metrics import MetricsLog, peak_memory_bytes
from .rundir import RunDir
from .state import Interval


class Progress:
    """The metrics log, the progress bar and the sample trace of one `Trainer.train`, closed at its end."""

    def __init__(self, run_dir: RunDir, d: Dist, total: int, step: int):
        from tqdm import tqdm

        self.log = MetricsLog(run_dir.metrics, run_dir.tb, d.is_main)
        # LIGO_DS_SAMPLE_LOG=PREFIX: each rank appends "step first count" for every batch it reads to
        # PREFIX.rankN, so the data order across restarts and world sizes can be audited.
        prefix = os.environ.get("LIGO_DS_SAMPLE_LOG")
        self.trace = open(f"{prefix}.rank{d.rank}", "a") if prefix else None
        self.bar = tqdm(total=total, initial=step, disable=not d.is_main, desc="train", unit="step", dynamic_ncols=True)

    def read(self, step: int, first: int, count: int) -> None:
        """Note a batch read (LIGO_DS_SAMPLE_LOG)."""
        if self.trace:
            self.trace.write(f"{step} {first} {count}\n")
            self.trace.flush()

    def show(self, row: dict) -> None:
        self.bar.set_postfix(loss=f"{row['loss']:.3f}", tok_s=f"{row['tokens_per_s']:,.0f}")

    def moved_to(self, step: int) -> None:
        """The run went back to `step` (a rollback)."""
        self.bar.n = step
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()
        self.log.close()
        if self.trace is not None:
            self.trace.close()


class Columns:
    """A logged row's training columns: averages over the good steps since the last row, throughput, MFU,
    memory, each data source's share of a mixture so far, and the job's own (`extra`)."""

    def __init__(
        self,
        engine,
        d: Dist,
        flops_per_token: int,
        peak: float | None,
        data: TokenData,
        consumed: Callable[[int], dict] | None,
        extra: Callable[[], dict] | None,
    ):
        self.engine, self.d, self.flops_per_token, self.peak, self.extra = engine, d, flops_per_token, peak, extra
        self.consumed = consumed
        self.source_names = source_names(data)

    def row(self, interval: Interval, lr: float, samples: int) -> dict:
        """The columns; resets `interval`. Collective where `extra` gathers."""
        W = self.d.world_size
        tokens_per_s = interval.tokens / max(interval.seconds, 1e-9)
        mean_loss = interval.loss_sum / interval.loss_steps
        interval.reset()
        row = {
            "loss": mean_loss,
            "lr": lr,
            "grad_norm": ds_engine.grad_norm(self.engine),
            "tokens_per_s": tokens_per_s,
            "mfu": None if self.peak is None else tokens_per_s * self.flops_per_token / (self.peak * W),
            "peak_mem_gb": peak_memory_bytes(self.d.device) / 2**30,
            **(self.extra() if self.extra else {}),
        }
        if self.consumed is not None:  # a mixture: each source's share so far
            consumed = self.consumed(samples).values()
            row.update({f"tokens/{n}": t for n, t in zip(self.source_names, consumed, strict=True)})
        return row


def source_names(data: TokenData) -> list[str]:
    """A metrics column name per data source: its directory's name, numbered where two share one."""
    names = [p.dir.name for p in data.sources]
    return [n if names.count(n) == 1 else f"{n}.{i}" for i, n in enumerate(names)]
