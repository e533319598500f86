"""`make demo`: the main job on the default offline corpus, end to end, at laptop-CPU size.

Each stage is a real `ligo-ds` command run as a subprocess, exactly as a user would type it, and each
is skipped when its output already exists, so an interrupted demo continues where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

# Demo model shapes (HF config.json contents). The vocabulary matches the prepared corpus.
SMALL = dict(model_type="gpt2", n_layer=2, n_embd=128, n_head=4, n_positions=256, vocab_size=8192)
LARGE = dict(model_type="gpt2", n_layer=4, n_embd=256, n_head=8, n_positions=256, vocab_size=8192)


def run(*args: str) -> None:
    print(f"\n$ ligo-ds {' '.join(args)}", flush=True)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ligo_ds", *args], check=True)
    print(f"  ({time.perf_counter() - start:.1f} s)", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo", help="working directory (default ./demo)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    data = out / "data"
    if not (data / "meta.json").is_file():
        run("prepare", "--source", "stdlib", "--out", str(data), "--force")
    for name, shape in (("small", SMALL), ("large", LARGE)):
        config = out / f"{name}.json"
        config.write_text(json.dumps(shape, indent=2) + "\n")
        run("inspect", "--model", str(config), "--data", str(data), "--seq-len", "128")
    return 0


if __name__ == "__main__":
    sys.exit(main())
