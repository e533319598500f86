"""A request to checkpoint and stop: SIGTERM or SIGUSR1 to a rank, or the file RUN_DIR/STOP appearing."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import torch

from ..distributed import launch


class StopRequest:
    """A request to checkpoint and stop: SIGTERM or SIGUSR1 to a rank, or the file `stop_file` appearing.

    The file is what a Slurm batch script's trap writes (launchers such as torchrun and the deepspeed
    runner do not pass signals on to the ranks reliably). Ranks agree at logging steps: one all-reduce
    of a flag, at points where the loop synchronises anyway.
    """

    def __init__(self, stop_file: Path, device: torch.device):
        self.stop_file, self.device, self.flag = stop_file, device, False
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGUSR1):
                signal.signal(sig, self._on_signal)

    def _on_signal(self, signum, frame) -> None:
        self.flag = True

    def agreed(self) -> bool:
        mine = torch.tensor(float(self.flag or self.stop_file.exists()), device=self.device)
        return launch.all_reduce_sum(mine).item() > 0

    def consume(self, is_main: bool) -> None:
        if is_main:
            self.stop_file.unlink(missing_ok=True)
