"""Data preparation: `ligo-ds prepare` against bare `tokenizers` on the same corpus, tokenizer and cores.

    python bench/prepare.py                                   # 0.2 and 2 GB corpora, label "new", this checkout
    git worktree add /tmp/old COMMIT
    python bench/prepare.py --label old --pythonpath /tmp/old # the same, for an older ligo_ds; rows accumulate
    python bench/prepare.py --tiny                            # a 5 MB corpus and a 1000-token vocabulary; seconds

The corpus is made here, deterministically, from runs of consecutive lines of the standard library's
sources and docs (documents of 200 B to 20 kB, JSON lines, about 256 MB a file), and a byte-level BPE is
trained once on a 50 MB sample of it; both are cached in --work. Each size is prepared by a real
`python -m ligo_ds prepare` with --pythonpath first on PYTHONPATH, and measured from outside: wall time,
tokens/s (tokens from its meta.json), the peak RSS of its whole process tree, and its peak disk use beside
the output (its scratch, with the output itself once written) against the output's final size. The
baseline is `Tokenizer.encode_batch` alone, timed on texts already in memory, on the smallest corpus
only (to keep the run short); each row's percentage is against the baseline of the same invocation.
Rows are merged into --out by (label, size), so an old and a new implementation end in one table.

Past 300 lines on purpose: the corpus it builds, the baseline, the ligo_ds run and the table are one
comparison read top to bottom; measuring from outside (memory, disk) lives in bench/measure.py.
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
import os
import platform
import random
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import Peak, du, tree_rss  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

GB = 1e9
MB = 1e6
FILE_BYTES = 256 * MB  # a corpus file; a 2 GB corpus is 8 of them, so a reader has files to share out
DOC_BYTES = (200, 20_000)  # document lengths, log-uniform between these
SAMPLE_BYTES = 50 * MB  # what the tokenizer is trained on
SPECIAL = "<|endoftext|>"
CORPUS_VERSION = 1  # bump when the generator changes, so cached corpora are rebuilt
BASELINE = "bare tokenizers"
PREPARE_VAL_FRACTION = 0.02  # prepare's default, which the study runs at
GOALS = (
    "tokens/s >= 80 % of bare tokenizers; peak RSS of the largest size < 1.2x that of the smallest; "
    "peak disk (scratch and output) <= 1.2x the output"
)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def size_name(size_gb: float) -> str:
    return f"{size_gb:g}"


# ---- corpus ------------------------------------------------------------------------------------------


def stdlib_texts() -> list[str]:
    """The standard library's .py/.rst/.txt files (installed packages left out), sorted, as text."""
    root = Path(sysconfig.get_paths()["stdlib"])
    texts = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if path.suffix not in (".py", ".rst", ".txt") or {"site-packages", "__pycache__"} & set(rel.parts):
            continue
        if not path.is_file():
            continue
        # A few test files hold deliberately broken bytes; replacing them keeps every document valid UTF-8.
        text = path.read_bytes().decode("utf-8", errors="replace")
        if text.strip():
            texts.append(text)
    if not texts:
        raise SystemExit(f"no .py/.rst/.txt files under the standard library {str(root)!r}")
    return texts


def line_starts(text: str) -> list[int]:
    """Offsets of every line's first character, so a run of lines is one slice of `text`."""
    starts, pos = [], 0
    for line in text.splitlines(keepends=True):
        starts.append(pos)
        pos += len(line)
    return starts


def document(rng: random.Random, texts: list[str], starts: list[list[int]], length: int) -> str:
    """About `length` characters: consecutive lines from a random place of a random file, then of another
    file when that one ends first. Slicing whole lines keeps the text as natural as its sources."""
    parts = []
    while length > 0:
        i = rng.randrange(len(texts))
        lines = starts[i]
        begin = lines[rng.randrange(len(lines))]
        j = bisect.bisect_left(lines, begin + length)
        end = lines[j] if j < len(lines) else len(texts[i])
        parts.append(texts[i][begin:end])
        length -= end - begin
    return "".join(parts)


def write_corpus(folder: Path, size_gb: float) -> dict:
    """JSON-lines files of about FILE_BYTES under `folder`, `size_gb` in all; returns their manifest."""
    texts = stdlib_texts()
    starts = [line_starts(t) for t in texts]
    rng = random.Random(f"ligo-prepare-bench:{size_gb!r}")  # str seeds hash the same in every process
    lo, hi = math.log(DOC_BYTES[0]), math.log(DOC_BYTES[1])
    total, files, docs = size_gb * GB, [], 0
    folder.mkdir(parents=True)
    while sum(f["bytes"] for f in files) < total:
        target = min(FILE_BYTES, total - sum(f["bytes"] for f in files))
        name = f"part-{len(files):05d}.jsonl"
        written, chunk = 0, []
        with open(folder / name, "wb") as f:
            while written < target:
                text = document(rng, texts, starts, round(math.exp(rng.uniform(lo, hi))))
                line = (json.dumps({"text": text}, ensure_ascii=False) + "\n").encode()
                chunk.append(line)
                written += len(line)
                docs += 1
                if len(chunk) >= 2000:  # a few MB per write: the joins, not the syscalls, set the pace
                    f.write(b"".join(chunk))
                    chunk = []
            f.write(b"".join(chunk))
        files.append({"name": name, "bytes": written})
    return {"version": CORPUS_VERSION, "size_gb": size_gb, "python": sys.version, "docs": docs, "files": files}


def corpus(work: Path, size_gb: float) -> tuple[Path, dict]:
    """The cached corpus of `size_gb`, made first when missing or not what its manifest says."""
    folder = work / f"corpus-{size_name(size_gb)}gb"
    # Beside the folder, not in it: prepare reads every .json file of a --source folder.
    manifest_path = work / f"corpus-{size_name(size_gb)}gb.manifest.json"
    if manifest_path.is_file() and folder.is_dir():
        manifest = json.loads(manifest_path.read_text())
        on_disk = sorted((p.name, p.stat().st_size) for p in folder.iterdir())
        expected = sorted((f["name"], f["bytes"]) for f in manifest["files"])
        same_source = manifest.get("version") == CORPUS_VERSION and manifest.get("python") == sys.version
        if same_source and on_disk == expected:
            return folder, manifest
    shutil.rmtree(folder, ignore_errors=True)
    manifest_path.unlink(missing_ok=True)
    start = time.perf_counter()
    log(f"corpus {size_name(size_gb)} GB: writing {folder}")
    partial = folder.with_name(folder.name + ".partial")  # a killed run leaves no half corpus that looks whole
    shutil.rmtree(partial, ignore_errors=True)
    manifest = write_corpus(partial, size_gb)
    partial.rename(folder)
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    log(f"corpus {size_name(size_gb)} GB: {manifest['docs']:,} docs in {time.perf_counter() - start:.0f} s")
    return folder, manifest


def texts_in(folder: Path, limit_bytes: float = math.inf):
    """Every document's text of a corpus folder, in file order, until about `limit_bytes` were read."""
    read = 0
    for path in sorted(folder.glob("*.jsonl")):
        with open(path, "rb") as f:
            for line in f:
                yield json.loads(line)["text"]
                read += len(line)
                if read >= limit_bytes:
                    return


# ---- tokenizer ---------------------------------------------------------------------------------------


def train_tokenizer(sample: Path, vocab_size: int, out: Path) -> None:
    """A byte-level BPE trained on the first SAMPLE_BYTES of `sample`, saved as a transformers directory
    (what `ligo-ds prepare --tokenizer` loads)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[SPECIAL],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts_in(sample, SAMPLE_BYTES), trainer)
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=SPECIAL, bos_token=SPECIAL, pad_token=SPECIAL)
    wrapped.save_pretrained(str(out))


def tokenizer(work: Path, vocab_size: int, sample: Path, sample_manifest: dict) -> Path:
    """The cached tokenizer directory, trained first when missing or trained on another sample."""
    out = work / f"tokenizer-v{vocab_size}"
    record = work / f"tokenizer-v{vocab_size}.json"
    want = {"vocab_size": vocab_size, "sample_bytes": SAMPLE_BYTES, "sample": sample_manifest}
    if record.is_file() and (out / "tokenizer.json").is_file() and json.loads(record.read_text()) == want:
        return out
    start = time.perf_counter()
    shutil.rmtree(out, ignore_errors=True)
    train_tokenizer(sample, vocab_size, out)
    record.write_text(json.dumps(want, indent=2) + "\n")
    log(f"tokenizer: vocabulary {vocab_size} trained in {time.perf_counter() - start:.0f} s -> {out}")
    return out


def hf_datasets_cache() -> Path:
    """Where `datasets` caches by default; prepare may write Arrow files there instead of beside its output."""
    if os.environ.get("HF_DATASETS_CACHE"):
        return Path(os.environ["HF_DATASETS_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "datasets"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "huggingface" / "datasets"


# ---- baseline: tokenizers alone -----------------------------------------------------------------------


def baseline_worker(folder: Path, tokenizer_dir: Path, batch: int) -> None:
    """Run in a subprocess (its own thread pool): print docs, tokens and seconds of encode_batch alone."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    docs = tokens = 0
    seconds = 0.0
    texts: list[str] = []

    def encode() -> None:
        nonlocal docs, tokens, seconds
        start = time.perf_counter()
        encodings = tok.encode_batch(texts)
        seconds += time.perf_counter() - start
        # One end-of-text per document, as prepare appends, so both count the same tokens.
        tokens += sum(len(e.ids) for e in encodings) + len(encodings)
        texts.clear()

    from ligo_ds.data import encoding

    # The documents prepare encodes: each cut where its pieces change split, at prepare's default fraction.
    threshold = encoding.threshold(PREPARE_VAL_FRACTION)
    for text in texts_in(folder):
        docs += 1  # the corpus's documents, as the manifest counts them
        for stretch, _, _ in encoding.runs(encoding.pieces(text), threshold):
            texts.append(stretch)
            if len(texts) == batch:
                encode()
    if texts:
        encode()
    print(json.dumps({"docs": docs, "tokens": tokens, "seconds": seconds}))


def run_baseline(folder: Path, tokenizer_dir: Path, num_proc: int, size_gb: float, batch: int) -> dict:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "true", "RAYON_NUM_THREADS": str(num_proc)}
    env["RAYON_RS_NUM_CPUS"] = str(num_proc)  # the name older tokenizers releases read
    cmd = [sys.executable, __file__, "--baseline-worker", str(folder), str(tokenizer_dir), "--batch", str(batch)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True)
    with Peak(lambda: tree_rss(proc.pid)) as memory:
        out, _ = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"baseline failed ({proc.returncode}): {' '.join(cmd)}")
    result = json.loads(out.strip().splitlines()[-1])
    tokens_per_s = result["tokens"] / result["seconds"]
    log(f"{BASELINE} {size_name(size_gb)} GB: {tokens_per_s:,.0f} tokens/s ({result['seconds']:.1f} s encoding)")
    return {
        "label": BASELINE,
        "size_gb": size_gb,
        "docs": result["docs"],
        "tokens": result["tokens"],
        "wall_s": result["seconds"],  # encode_batch alone
        "tokens_per_s": tokens_per_s,
        "baseline_tokens_per_s": tokens_per_s,
        "peak_rss_bytes": memory.peak,
        "num_proc": num_proc,
        "batch_docs": batch,
    }


# ---- prepare ------------------------------------------------------------------------------------------


def child_env(pythonpath: Path, tmp: Path) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(pythonpath), os.environ.get("PYTHONPATH")) if p)
    # Temporary files land in the measured folder too, whatever API the implementation makes them with.
    env["TMPDIR"] = str(tmp)
    return env


def ligo_ds_source(env: dict, cwd: Path, pythonpath: Path) -> str:
    """Where the measured `ligo_ds` is imported from; a copy elsewhere on sys.path would be measured instead."""
    found = subprocess.run(
        [sys.executable, "-c", "import ligo_ds; print(ligo_ds.__file__)"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    if not Path(found).resolve().is_relative_to(pythonpath.resolve()):
        raise SystemExit(f"--pythonpath {str(pythonpath)!r}: `import ligo_ds` finds {found!r} instead")
    return found


def commit_of(path: Path) -> str | None:
    """The checkout's commit, '+dirty' when it has changes: the code measured, as far as git can say."""
    try:
        head = subprocess.run(["git", "-C", str(path), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(["git", "-C", str(path), "status", "--porcelain"], capture_output=True, text=True)
    except FileNotFoundError:
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def token_count(meta: dict) -> int:
    if "train_tokens" in meta and "val_tokens" in meta:
        return meta["train_tokens"] + meta["val_tokens"]
    return sum(meta["splits"][split]["tokens"] for split in ("train", "val"))  # a newer layout


def run_prepare(args, folder: Path, manifest: dict, tokenizer_dir: Path, size_gb: float, baseline: dict) -> dict:
    runs = Path(args.work) / "runs"  # the folder whose growth is the job's disk use: output, scratch, TMPDIR
    out, tmp = runs / f"out-{size_name(size_gb)}gb", runs / "tmp"
    for stale in (out, tmp):  # a --keep run's output, or a killed run's leftovers, are not this run's
        shutil.rmtree(stale, ignore_errors=True)
    tmp.mkdir(parents=True)
    pythonpath = Path(args.pythonpath)
    env = child_env(pythonpath, tmp)
    # cwd is not the repository: `python -m` puts cwd first on sys.path, ahead of --pythonpath.
    source = ligo_ds_source(env, runs, pythonpath)
    cache = hf_datasets_cache()
    cmd = [sys.executable, "-m", "ligo_ds", "prepare", "--source", str(folder), "--out", str(out)]
    cmd += ["--tokenizer", str(tokenizer_dir), "--num-proc", str(args.num_proc), "--force"]
    job_log = Path(args.work) / f"prepare-{args.label}-{size_name(size_gb)}gb.log"
    before = du(runs) + du(cache)

    def disk() -> int:
        return du(runs) + du(cache) - before

    start = time.perf_counter()
    with open(job_log, "w") as f:
        f.write(f"$ PYTHONPATH={env['PYTHONPATH']} {' '.join(cmd)}\n")
        f.flush()
        proc = subprocess.Popen(cmd, env=env, cwd=runs, stdout=f, stderr=subprocess.STDOUT)
        with Peak(lambda: tree_rss(proc.pid)) as memory, Peak(disk) as scratch:
            proc.wait()
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"prepare failed ({proc.returncode}); {job_log} ends:\n{job_log.read_text()[-4000:]}")
    meta = json.loads((out / "meta.json").read_text())
    tokens, output = token_count(meta), du(out)
    if not args.keep:
        shutil.rmtree(out)
    shutil.rmtree(tmp, ignore_errors=True)
    log(f"prepare {args.label} {size_name(size_gb)} GB: {wall:.0f} s, {tokens / wall:,.0f} tokens/s")
    return {
        "label": args.label,
        "size_gb": size_gb,
        "docs": manifest["docs"],
        "tokens": tokens,
        "wall_s": wall,
        "tokens_per_s": tokens / wall,
        "baseline_tokens_per_s": baseline["tokens_per_s"],
        # The same corpus and tokenizer as the baseline's: every token counted by both, or a document lost.
        "tokens_match_baseline": tokens == baseline["tokens"] if baseline["size_gb"] == size_gb else None,
        "peak_rss_bytes": memory.peak,
        "peak_disk_bytes": scratch.peak,
        "output_bytes": output,
        "num_proc": args.num_proc,
        "vocab_size": args.vocab_size,
        "pythonpath": str(pythonpath),
        "ligo_ds": source,
        "commit": commit_of(pythonpath),
    }


# ---- results ------------------------------------------------------------------------------------------


def merge(path: Path, new_rows: list[dict]) -> list[dict]:
    """The rows already in `path` with `new_rows` replacing those of the same (label, size); written back."""
    rows = json.loads(path.read_text())["rows"] if path.is_file() else []
    keys = {(r["label"], r["size_gb"]) for r in new_rows}
    rows = [r for r in rows if (r["label"], r["size_gb"]) not in keys] + new_rows
    rows.sort(key=lambda r: (r["label"] != BASELINE, r["label"], r["size_gb"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"goals": GOALS, "rows": rows}, indent=2) + "\n")
    return rows


def table(rows: list[dict]) -> str:
    head = (
        "| implementation | size (GB) | docs | tokens | wall (s) | tokens/s | % of bare tokenizers "
        "| peak RSS (MB) | peak disk / output |"
    )
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        if r["label"] == BASELINE:
            label, disk = f"{BASELINE} (encode_batch only, {size_name(r['size_gb'])} GB corpus only)", "-"
        else:
            label = r["label"]
            disk = (
                f"{r['peak_disk_bytes'] / MB:,.0f} MB / {r['output_bytes'] / MB:,.0f} MB "
                f"({r['peak_disk_bytes'] / r['output_bytes']:.2f}x)"
            )
        lines.append(
            f"| {label} | {size_name(r['size_gb'])} | {r['docs']:,} | {r['tokens']:,} | {r['wall_s']:.1f} "
            f"| {r['tokens_per_s']:,.0f} | {100 * r['tokens_per_s'] / r['baseline_tokens_per_s']:.0f} % "
            f"| {r['peak_rss_bytes'] / MB:,.0f} | {disk} |"
        )
    return "\n".join(lines)


def verdicts(rows: list[dict]) -> list[str]:
    """Each implementation's rows against the goals, one line per label."""
    out = []
    for label in sorted({r["label"] for r in rows} - {BASELINE}):
        mine = sorted((r for r in rows if r["label"] == label), key=lambda r: r["size_gb"])
        speed = ", ".join(
            f"{size_name(r['size_gb'])} GB {100 * r['tokens_per_s'] / r['baseline_tokens_per_s']:.0f} %"
            + (" ok" if r["tokens_per_s"] >= 0.8 * r["baseline_tokens_per_s"] else " MISSED")
            for r in mine
        )
        disk = ", ".join(
            f"{size_name(r['size_gb'])} GB {r['peak_disk_bytes'] / r['output_bytes']:.2f}x"
            + (" ok" if r["peak_disk_bytes"] <= 1.2 * r["output_bytes"] else " MISSED")
            for r in mine
        )
        line = f"- {label}: tokens/s vs bare tokenizers (>= 80 %): {speed}; peak disk / output (<= 1.2x): {disk}"
        if len(mine) > 1:
            small, large = mine[0], mine[-1]
            ratio = large["peak_rss_bytes"] / small["peak_rss_bytes"]
            line += (
                f"; peak RSS {size_name(large['size_gb'])} GB / {size_name(small['size_gb'])} GB (< 1.2x): "
                f"{ratio:.2f}x" + (" ok" if ratio < 1.2 else " MISSED")
            )
        out.append(line)
        unmatched = [r for r in mine if r.get("tokens_match_baseline") is False]
        out += [f"  {label} {size_name(r['size_gb'])} GB: token count differs from bare tokenizers'" for r in unmatched]
    settings = {(r["num_proc"], r.get("vocab_size")) for r in rows if r["label"] != BASELINE}
    if len(settings) > 1:
        out.append(f"note: the rows mix settings (num_proc, vocab): {sorted(settings, key=str)}")
    return out


# ---- main ---------------------------------------------------------------------------------------------


def check_free_disk(work: Path, sizes: list[float]) -> None:
    """Warn early: an implementation that copies the corpus into a cache needs several times its size."""
    free = shutil.disk_usage(work).free
    need = 10 * max(sizes) * GB  # the Arrow-cache implementation peaked at 8x the corpus at 5 MB
    if free < need:
        log(f"warning: {free / GB:.1f} GB free in {work}; the largest size may need about {need / GB:.0f} GB")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", help="corpus sizes in GB, comma-separated (default 0.2,2; --tiny: 0.005)")
    parser.add_argument("--vocab-size", type=int, help="the benchmark tokenizer's vocabulary (default 32000)")
    parser.add_argument("--tiny", action="store_true", help="a 5 MB corpus and a 1000-token vocabulary")
    parser.add_argument("--num-proc", type=int, default=os.cpu_count(), help="prepare's --num-proc and its cores")
    parser.add_argument("--label", default="new", help="the implementation's name in the table")
    parser.add_argument("--pythonpath", default=str(ROOT), help="the checkout whose ligo_ds is measured")
    parser.add_argument("--work", default="/tmp/ligo_prepare_bench", help="corpora, tokenizer, outputs, logs")
    parser.add_argument("--out", help="JSON rows, merged by (label, size) (default bench/results/prepare.json)")
    parser.add_argument("--keep", action="store_true", help="keep each prepared DATA_DIR under WORK/runs")
    parser.add_argument("--batch", type=int, default=1000, help="documents per encode_batch in the baseline")
    parser.add_argument("--baseline-worker", nargs=2, metavar=("CORPUS", "TOKENIZER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_worker:
        baseline_worker(Path(args.baseline_worker[0]), Path(args.baseline_worker[1]), args.batch)
        return 0
    sizes = sorted(float(s) for s in (args.sizes or ("0.005" if args.tiny else "0.2,2")).split(","))
    args.vocab_size = args.vocab_size or (1000 if args.tiny else 32000)
    work = Path(args.work)
    # A tiny run's rows are a smoke test's, not results: they stay out of bench/results unless asked.
    default_json = work / "prepare-tiny.json" if args.tiny else ROOT / "bench" / "results" / "prepare.json"
    out_json = Path(args.out) if args.out else default_json
    work.mkdir(parents=True, exist_ok=True)
    check_free_disk(work, sizes)

    corpora = {size: corpus(work, size) for size in sizes}
    smallest, small_manifest = corpora[sizes[0]]
    tokenizer_dir = tokenizer(work, args.vocab_size, smallest, small_manifest)
    baseline = run_baseline(smallest, tokenizer_dir, args.num_proc, sizes[0], args.batch)
    baseline["vocab_size"] = args.vocab_size
    new_rows = [baseline]
    for size in sizes:
        folder, manifest = corpora[size]
        new_rows.append(run_prepare(args, folder, manifest, tokenizer_dir, size, baseline))
    stamp = {"host": platform.node(), "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M")}
    rows = merge(out_json, [{**r, **stamp} for r in new_rows])

    print(f"\n## ligo-ds prepare, {args.num_proc} processes, vocabulary {args.vocab_size}\n")
    print(table(rows))
    print(f"\ngoals: {GOALS}")
    print("\n".join(verdicts(rows)))
    print(f"\nrows: {out_json}; logs: {work}/prepare-*.log")
    return 0


if __name__ == "__main__":
    sys.exit(main())
