"""What a folder of ours owns: one writer at a time (`hold`), and only the files its own index lists
(`confined`).

The lock, which every command that writes a run or data folder takes first, is `flock` on
FOLDER/.ligo_ds.lock, taken without waiting and held for the rest of the process: the kernel drops it when
the process ends, however it ends, so a killed run leaves no stale lock and its rerun resumes. The file also
names the holder (host, pid, command, start time) for the refusal a second writer gets. One process takes a
folder's lock once: a second `hold` of a folder it already holds is a no-op, so a job that reclaims its own
folder (a resume inside one process, a test) is not refused by itself.

On NFS, Linux turns flock into a POSIX byte-range lock, which a process loses when it closes ANY
descriptor of the file: so the holder never opens the lock file a second time; only a refused process
reads it. Ranks of one job share the folder through rank 0, which holds the lock for them all.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from .errors import ConfigError

LOCK_FILE = ".ligo_ds.lock"

_HELD: dict[str, int] = {}  # resolved folder -> the descriptor that holds its lock


def holder_record() -> dict:
    """What a lock file says of the process that holds it."""
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "command": " ".join(["ligo-ds", *[a for a in sys.argv[1:2] if not a.startswith("-")]]),
        "since": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def _holder(path: Path) -> str:
    """The holder as its lock file names it, for the refusal."""
    try:
        h = json.loads(path.read_text())
        return f"{h['command']} (pid {h['pid']} on host {h['host']}, since {h['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (its lock file names no holder yet)"


def hold(folder: str | Path, what: str) -> None:
    """Take `folder`'s lock for the rest of this process (creating the folder), or refuse naming its holder.
    `what`: the option that named the folder, for the message."""
    folder = Path(folder)
    key = str(folder.resolve())
    path = folder / LOCK_FILE
    if key in _HELD:
        if _same_file(_HELD[key], path):
            return
        os.close(_HELD.pop(key))  # the folder was moved away or removed since (prepare renames its own)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno not in (errno.EWOULDBLOCK, errno.EACCES, errno.EAGAIN):
            raise ConfigError(f"cannot lock {what} {str(folder)!r}: {e.strerror}") from None
        raise ConfigError(
            f"{what} {str(folder)!r} is in use by {_holder(path)}: one job writes a folder at a time; wait for "
            "it to end or stop it (a killed job's lock goes with it)"
        ) from None
    record = json.dumps(holder_record()).encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, record, 0)
    _HELD[key] = fd


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


def held(folder: str | Path) -> bool:
    """Whether this process holds `folder`'s lock."""
    return str(Path(folder).resolve()) in _HELD


def only_the_lock(folder: Path) -> bool:
    """Whether `folder` holds nothing but (at most) a lock file: a folder a refused or killed claim left."""
    return all(p.name == LOCK_FILE for p in folder.iterdir())


def confined(folder: Path, name, listed_in: Path, also: tuple[Path, ...] = ()) -> Path:
    """`folder / name` for a file name a folder's own index lists (a shard in meta.json, a weight file in a
    model's index): a plain name inside the folder, no separator, no `..`, not absolute, and no symlink out
    of it (or out of `also`: where the folder's links may lead, as a Hub cache snapshot's into its blobs/);
    anything else is refused naming the entry, so a crafted index reads nothing outside its folder."""
    plain = isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\\" not in name
    if not plain or "\0" in name:
        raise ConfigError(
            f"{str(listed_in)!r} lists the file {name!r}: expected a plain file name inside {str(folder)!r}"
        )
    path = folder / name
    target = Path(os.path.realpath(path))  # a link loop stays a path, and is not inside
    if path.is_symlink() and not any(root.resolve() in target.parents for root in (folder, *also)):
        raise ConfigError(
            f"{str(path)!r} (listed in {str(listed_in)!r}) is a symbolic link out of its folder, to "
            f"{str(target)!r}; a listed file must be inside {str(folder)!r}"
        )
    return path
