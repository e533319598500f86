"""metrics.jsonl and TensorBoard, written by rank 0 only; and the device facts a row reports."""

from __future__ import annotations

import json
from pathlib import Path

import torch


class MetricsLog:
    def __init__(self, path: Path, tb_dir: Path, enabled: bool):
        self.enabled = enabled
        self._file = open(path, "a") if enabled else None
        self._tb = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(tb_dir))

    def write(self, row: dict) -> None:
        if not self.enabled:
            return
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        for key, value in row.items():
            if key != "step" and isinstance(value, (int, float)) and value is not None:
                self._tb.add_scalar(key, value, row["step"])
        for i, sample in enumerate(row.get("generated", ())):  # training/samples.py; markdown, hence the fence
            self._tb.add_text(f"generated/{i}", f"```\n{sample['prompt']}{sample['text']}\n```", row["step"])

    def reopen(self) -> None:
        """Append to the file now at `path` (after RunDir.truncate_metrics replaced it)."""
        if self.enabled:
            self._file.close()
            self._file = open(self._file.name, "a")

    def close(self) -> None:
        if self.enabled:
            self._file.close()
            self._tb.close()


def peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
