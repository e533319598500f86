"""Measuring a job from outside while it runs: the resident memory of its process tree and the disk a
folder takes, each sampled in a thread (Peak). Used by bench/prepare.py; Linux /proc only."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path


def du(path: Path) -> int:
    """Bytes allocated under `path` as du counts them (blocks, each inode once); 0 when it is absent.
    Files come and go while a job runs, so whatever vanishes mid-walk is skipped."""
    seen, total, stack = set(), 0, [path]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            continue
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
            if entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
    return total


def _children(pid: int) -> list[int]:
    """Direct children of `pid`: each thread lists those it started (needs CONFIG_PROC_CHILDREN)."""
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out.extend(int(c) for c in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
    return out


def _children_by_ppid(pid: int) -> list[int]:
    """The same from every process's parent id, for kernels without the children file."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # the name may hold spaces and parentheses
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


CHILDREN = _children if Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").exists() else _children_by_ppid


def tree(pid: int) -> list[int]:
    """`pid` and every process below it: tokenizing workers are children of the datasets pool."""
    pids, stack = [], [pid]
    while stack:
        p = stack.pop()
        pids.append(p)
        stack.extend(CHILDREN(p))
    return pids


def rss(pid: int) -> int:
    """Resident bytes of one process; 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def tree_rss(pid: int) -> int:
    # A sum over processes: pages forked workers share are counted once per worker, as each one holds them.
    return sum(rss(p) for p in tree(pid))


class Peak:
    """The largest value `sample()` returns, polled in a thread while the block runs, and once at its end."""

    def __init__(self, sample, interval: float = 0.2):
        self.sample, self.interval, self.peak = sample, interval, 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while True:
            start = time.perf_counter()
            self.peak = max(self.peak, self.sample())
            # A slow sample (a large cache to walk) must not take a core from the job it measures.
            if self.done.wait(max(self.interval, 2 * (time.perf_counter() - start))):
                return

    def __enter__(self) -> Peak:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join()
        self.peak = max(self.peak, self.sample())
