"""A larger offline corpus for GPU-sized studies: the Python sources of the installed site-packages.

    python bench/code_corpus.py OUT_DIR [--share 0.43]

The stdlib corpus (`ligo-ds prepare --source stdlib`, 3.1M training tokens) is what the CPU studies use;
a 500-step GPU run at 16k tokens a step would see it three times. This writes one .txt document per
source file (tests left out) for a hash-chosen share of the files, so the choice does not depend on
the order packages were installed in; `ligo-ds prepare --source OUT_DIR` then tokenises it. With
torch, deepspeed, transformers and datasets installed, the default share gives about 83 MB of text
and 22M training tokens at a vocabulary of 8192.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import sysconfig
from pathlib import Path


def _key(rel: Path) -> bytes:
    return hashlib.sha1(str(rel).encode()).digest()


def write_corpus(out: Path, share: float = 0.43, root: Path | None = None) -> tuple[int, int]:
    """Write the chosen files under `out`; returns (documents, bytes)."""
    if not 0.0 < share <= 1.0:
        raise SystemExit(f"--share {share}: expected a fraction in (0, 1]")
    root = root or Path(sysconfig.get_paths()["purelib"])
    out.mkdir(parents=True, exist_ok=True)
    docs = size = 0
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        key = _key(rel)
        if {"test", "tests"} & set(rel.parts) or key[0] >= round(256 * share):
            continue
        text = path.read_bytes()
        try:
            text.decode("utf-8")
        except UnicodeDecodeError:
            continue
        if len(text) < 200:  # __init__ stubs and the like
            continue
        (out / f"{key.hex()[:16]}.txt").write_bytes(text)
        docs, size = docs + 1, size + len(text)
    return docs, size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--share", type=float, default=0.43, help="fraction of the source files kept (by hash)")
    args = parser.parse_args()
    docs, size = write_corpus(Path(args.out), args.share)
    print(f"wrote {docs} documents, {size / 1e6:.1f} MB, to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
