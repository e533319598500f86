"""The benchmarks run end to end at a tiny size, so CI exercises what GPU sessions and the savings
study run at full size. One file for every script of bench/, which share their job runner (bench/jobs.py)
and their tiny corpus; hence its length."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import tarfile
import time

import pytest

from ligo_ds.analysis.runs import load_curve
from ligo_ds.analysis.savings import compare
from ligo_ds.options import to_args
from ligo_ds.training.rundir import read_metrics

from conftest import cli
from procs import ROOT, job_env

pytestmark = pytest.mark.multiproc


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    (root / "corpus").mkdir()
    for i in range(60):
        (root / "corpus" / f"{i}.txt").write_text(f"def g{i}(a):\n    return [a] * {i}\n" * 6)
    return root


def test_gpu_run_tiny_runs_each_stage_and_stops_one_at_its_budget(tmp_path):
    """bench/gpu_run.sh --tiny, the GPU run's script on the CPU: set-up (the GPU's steps skipped), the tiny
    data, a savings stage stopped by its budget (its runs still packed without weights, the next stage
    still run, exit 1), and throughput's sweep with a non-default row that the fit is compared with."""
    env = {**job_env(), "PYTHON": sys.executable, "OUT": str(tmp_path / "out"), "GPU_RUN_WORK": str(tmp_path / "work")}
    script = ["bash", str(ROOT / "bench" / "gpu_run.sh"), "--tiny", "savings", "llama", "throughput"]
    run = subprocess.run(
        script, capture_output=True, text=True, timeout=900, env={**env, "SAVINGS_BUDGET_S": "6"}, cwd=ROOT
    )
    assert run.returncode == 1 and "not complete: savings llama (exit 124)" in run.stdout, run.stdout[-4000:]
    out = tmp_path / "out"
    names = ["gpu_run.log", "savings_llama.md", "savings_llama.tar.gz", "throughput.md", "throughput.tar.gz"]
    assert sorted(f.name for f in out.iterdir()) == names
    assert "TORCH_CUDA_ARCH_LIST and FusedAdam skipped" in (out / "gpu_run.log").read_text()
    assert "stopped at its budget of 6 s" in (out / "savings_llama.md").read_text()
    with tarfile.open(out / "savings_llama.tar.gz") as packed:
        kept = packed.getnames()
    assert all(n.startswith("tiny/") and "checkpoints" not in n and not n.endswith(".safetensors") for n in kept)

    with tarfile.open(out / "throughput.tar.gz") as packed:
        result = json.load(packed.extractfile("./throughput.json"))
        jobs_log = packed.extractfile("./jobs.log").read().decode()
    rows = {r["name"]: r for r in result["rows"]}
    assert result["peak_flops"] > 0 and not result["skipped"] and len(rows) == 3
    assert all(r["tokens_per_s"] > 0 and "failed" not in r for r in rows.values())
    variant, fit = rows["ligo_ds_gpt2-2L_64_zero3_x1_c0_full_l0"], rows["fit_gpt2-2L_64_zero3_x1_c0_full_l0_paper"]
    assert variant["checkpointing"] == "full" and not variant["chunked_loss"] and fit["train_row"] == variant["name"]
    # the row's options reach its command line: one chunk is the whole micro-batch, 2 x 32 tokens
    assert jobs_log.count("--no-compile --activation-checkpointing full --loss-chunk 64") == 2
    table = (out / "throughput.md").read_text()
    assert "| gpt2-2L/64 | zero3 | 1 | 2 | ligo_ds | no | full | one chunk |" in table
    assert "| gpt2-2L/64 | zero3 | 1 | 2 | HF + DeepSpeed |" in table and "fit step / training step" in table
    assert table in (out / "gpu_run.log").read_text()


def test_throughput_budget_cuts_the_end_of_the_list_and_a_failed_job_stays_a_row():
    """throughput.py's loop over stand-in jobs of half a second: a job starts only while the longest so far
    fits in what is left of the budget, and is given that much time (plus 30 s); a failed job is a row
    marked failed, and the next job still runs."""
    sys.path.insert(0, str(ROOT / "bench"))
    import throughput

    started = []

    class Jobs:
        peak, log = 1e12, "jobs.log"

        def run(self, job, timeout):
            started.append((job.kind, timeout))
            time.sleep(0.5)
            if job.kind == "hf":
                raise throughput.JobFailed("exit code 1")
            return 1000.0, 0.5

    p = throughput.PRESETS["tiny"]  # the HF baseline, one ligo_ds row, the fit
    results, skipped = throughput.run_preset(p, Jobs(), budget=1.4)
    assert [kind for kind, _ in started] == ["hf", "ligo_ds"] and [j.kind for j in skipped] == ["fit"]
    assert started[0][1] == pytest.approx(31.4, abs=0.05) and started[1][1] == pytest.approx(30.9, abs=0.2)
    hf, ours = (results[j] for j in p.jobs[:2])
    assert hf["failed"] == "exit code 1" and ours["tokens_per_s"] == 1000.0 and 0 < ours["mfu"] < 1
    table = throughput.tables(p, results, skipped)
    assert "| HF + DeepSpeed | - | - | whole batch, F.cross_entropy | failed | - | - | - |" in table
    assert "| ligo_ds | no | full | one chunk | 1,000 |" in table and f"skipped (budget): {p.jobs[2].name}" in table


def test_prepare_bench_tiny_merges_its_rows_with_another_implementations(tmp_path):
    # Rows of an earlier run: another implementation's stays, this label's at this size is replaced.
    measured = dict(docs=1, tokens=1, wall_s=1.0, tokens_per_s=1.0, baseline_tokens_per_s=1.0, peak_rss_bytes=1)
    earlier = dict(measured, size_gb=0.005, peak_disk_bytes=2, output_bytes=1, num_proc=2, vocab_size=1000)
    (tmp_path / "rows.json").write_text(
        json.dumps({"rows": [dict(earlier, label="old"), dict(earlier, label="new", tokens=7)]})
    )
    script = [sys.executable, str(ROOT / "bench" / "prepare.py"), "--tiny"]
    args = to_args(work=tmp_path / "work", out=tmp_path / "rows.json", num_proc=2, label="new")
    out = subprocess.run([*script, *args], capture_output=True, text=True, timeout=900, env=job_env(), cwd=ROOT)
    assert out.returncode == 0, out.stderr[-4000:]
    rows = {r["label"]: r for r in json.loads((tmp_path / "rows.json").read_text())["rows"]}
    assert sorted(rows) == ["bare tokenizers", "new", "old"] and rows["old"]["tokens"] == 1
    new, bare = rows["new"], rows["bare tokenizers"]
    # The same corpus and tokenizer: prepare counts every token the bare tokenizer does, one eos a document.
    assert new["tokens"] == bare["tokens"] > bare["docs"] == new["docs"] > 100 and new["tokens_match_baseline"]
    assert new["peak_rss_bytes"] > 0 and new["peak_disk_bytes"] >= new["output_bytes"] > 0
    assert new["ligo_ds"] == str(ROOT / "ligo_ds" / "__init__.py")
    assert "| new | 0.005 | " in out.stdout and "| old | 0.005 | " in out.stdout and "goals: " in out.stdout
    assert not any((tmp_path / "work" / "runs").iterdir())  # the output is deleted without --keep


def test_compute_bench_tiny_counts_what_each_option_keeps():
    """bench/compute.py's counts at toy sizes: full keeps nothing of a block beyond its input, selective
    about half of none, and the chunked loss peaks below whole-batch logits, less with smaller chunks."""
    script = [sys.executable, str(ROOT / "bench" / "compute.py"), "--tiny", "--no-compile"]
    out = subprocess.run(script, capture_output=True, text=True, timeout=300, env=job_env(), cwd=ROOT)
    assert out.returncode == 0, out.stderr[-4000:]
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in out.stdout.splitlines() if line.startswith("| ")]
    ratio = {r[0]: float(r[2]) for r in rows if r[2].replace(".", "", 1).isdigit()}  # "against none / plain"
    assert ratio["none"] == 1.0 and ratio["full"] == 0.0 and 0.3 < ratio["selective"] < 0.7
    chunked = [v for k, v in ratio.items() if k.startswith("chunked")]
    assert ratio["plain (whole-batch fp32 logits)"] == 1.0 and len(chunked) == 2 and 0 < chunked[1] < chunked[0] < 1


def test_savings_study_tiny_writes_all_three_outputs(corpus, tmp_path):
    # Two jobs at once: the sweeps, then the grown runs, share the machine; the reruns below run one at a time.
    study = [
        sys.executable,
        str(ROOT / "bench" / "savings.py"),
        *to_args(preset="tiny", families="gpt2", source=corpus / "corpus", out=tmp_path),
    ]
    out = subprocess.run([*study, "--jobs", "2"], capture_output=True, text=True, timeout=900, env=job_env(), cwd=ROOT)
    assert out.returncode == 0, out.stderr[-4000:]
    assert sorted(_jobs_run(out.stderr)) == sorted(
        [
            "prepare data",
            "pretrain gpt2/runs/small_lr0.003",
            "pretrain gpt2/runs/scratch_lr0.003",
            "report gpt2/report",
            *(f"grow gpt2/runs/{g}" for g in ("net2net_stack", "net2net_zero", "net2net_interpolate", "ligo")),
        ]
    )
    # Each job's output lands in jobs.log in one piece, never interleaved with another's.
    job_log = (tmp_path / "tiny" / "jobs.log").read_text()
    logs = sorted((tmp_path / "tiny" / "logs").iterdir())
    assert len(logs) == 7 and all(f.read_text() in job_log for f in logs)  # every job but prepare, which runs alone
    assert "2 jobs ran at once, so the time columns time shared runs" in out.stdout
    report = tmp_path / "tiny" / "gpt2" / "report"
    md = (report / "report.md").read_text()
    for run in ("scratch_lr0.003", "net2net_stack", "net2net_interpolate", "net2net_zero", "ligo"):
        assert f"| {run} |" in md
    assert (report / "report.csv").read_text().count("\n") == 6
    assert (report / "loss_vs_flops.png").read_bytes()[:4] == b"\x89PNG"
    runs = tmp_path / "tiny" / "gpt2" / "runs"
    _check_ligo_variants(tmp_path / "tiny", runs)
    # A rerun resumes: every finished job is skipped because its recorded command matches, so only the
    # report runs again; a finished run made by another command (a changed preset) stops the study.
    again = subprocess.run(study, capture_output=True, text=True, timeout=900, env=job_env(), cwd=ROOT)
    assert again.returncode == 0, again.stderr[-4000:]
    assert _jobs_run(again.stderr) == ["report report"]
    # A finished run without a record (a study from before records) is handed to `ligo-ds`, which finds
    # it finished under the same identity; the record is written then, and the run's metrics stay.
    scratch_record = runs / "scratch_lr0.003" / "savings_job.json"
    kept = scratch_record.read_text()
    metrics = (runs / "scratch_lr0.003" / "metrics.jsonl").read_text()
    scratch_record.unlink()
    norecord = subprocess.run(study, capture_output=True, text=True, timeout=900, env=job_env(), cwd=ROOT)
    assert norecord.returncode == 0, norecord.stderr[-4000:]
    assert "pretrain scratch_lr0.003:" in norecord.stderr and scratch_record.read_text() == kept
    assert (runs / "scratch_lr0.003" / "metrics.jsonl").read_text() == metrics
    record = runs / "net2net_zero" / "savings_job.json"
    job = json.loads(record.read_text())
    assert "$WORK/gpt2/runs/small_lr0.003/hf" in job["args"]
    record.write_text(json.dumps({"args": [a.replace("small_lr0.003", "small_lr0.001") for a in job["args"]]}))
    changed = subprocess.run(study, capture_output=True, text=True, timeout=900, env=job_env(), cwd=ROOT)
    assert changed.returncode != 0 and "holds a finished run made by a different command" in changed.stderr
    assert "small_lr0.001/hf" in changed.stderr and (runs / "net2net_zero" / "train" / "hf" / "config.json").is_file()
    # Grown runs on schedules of their own: LiGO at half the scratch run's length, and without a re-warmup
    # from half the peak, beside the finished runs (skipped); the report adds the own-schedule saving and
    # the saving curve.
    grid = ["--budgets", "0.5,1", "--schedules", "lemon,no-warmup", "--methods", "ligo"]
    own = subprocess.run([*study, *grid], capture_output=True, text=True, timeout=900, env=job_env(), cwd=ROOT)
    assert own.returncode == 0, own.stderr[-4000:]
    made = ["ligo_0.5x_lemon", "ligo_0.5x_no-warmup", "ligo_1x_no-warmup"]
    assert _jobs_run(own.stderr) == [*(f"grow {g}" for g in made), "report report"]
    half = json.loads((runs / "ligo_0.5x_no-warmup" / "train" / "config.json").read_text())["identity"]
    assert (half["total_steps"], half["warmup_steps"], half["lr"]) == (4, 0, 3e-3 / 2), "half the steps and peak"
    md = (report / "report.md").read_text()
    assert "## On their own schedule" in md and "| ligo | 4 |" in md and "## Saving by target loss" in md
    # which length reaches the target is up to the tiny runs; that the report answers it is not
    assert "- ligo: train the grown model for " in md or "- ligo: no length tried reaches the target" in md
    assert (report / "saving_curve.csv").read_text().startswith("target_loss,net2net_stack,net2net_interpolate,ligo\n")
    assert (report / "saving_vs_loss.png").read_bytes()[:4] == b"\x89PNG"
    # The report keeps the finished runs of the methods this invocation left out, but not net2net_zero,
    # whose record now names another small model: a report never mixes two studies' runs.
    assert "| net2net_stack |" in md and "| net2net_interpolate |" in md and "| net2net_zero |" not in md
    assert "net2net_zero left out of the report: it was made by a different command" in own.stderr
    # A rerun asking for one length only reports every length and schedule made before, and runs nothing.
    one = subprocess.run(
        [*study, "--budgets", "0.5", "--methods", "ligo"],
        capture_output=True,
        text=True,
        timeout=900,
        env=job_env(),
        cwd=ROOT,
    )
    assert one.returncode == 0 and _jobs_run(one.stderr) == ["report report"], one.stderr[-4000:]
    rows = [line.split(",")[0] for line in (report / "report.csv").read_text().splitlines()[1:]]
    assert rows == [
        "scratch_lr0.003",
        "net2net_stack",
        "net2net_interpolate",
        "ligo_0.5x_lemon",
        "ligo_0.5x_no-warmup",
        "ligo",
        "ligo_1x_no-warmup",
    ]
    # The small model's cost is recorded in each grown run: it survives moving the small run away.
    small_rows = read_metrics(runs / "small_lr0.003" / "metrics.jsonl")
    small_flops, small_val = small_rows[-1]["flops"], [r["val_loss"] for r in small_rows if "val_loss" in r][-1]
    (runs / "small_lr0.003").rename(tmp_path / "moved")
    assert load_curve(runs / "ligo").small_flops == small_flops > 0
    assert load_curve(runs / "net2net_zero").small_flops == small_flops
    # ... and so is its final loss, measured the same way as the target's, so the report can compare them
    scratch = load_curve(runs / "scratch_lr0.003")
    _, rows = compare([scratch, load_curve(runs / "ligo")])
    assert rows[1].small_final_val == small_val
    assert rows[1].small_reaches_target is (small_val <= scratch.final[2])
    assert ("already reaches the scratch target" in out.stderr) is rows[1].small_reaches_target


def test_jobs_spread_over_devices_and_stop_after_a_failure(corpus, tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT / "bench"))
    from jobs import Jobs

    for key, value in job_env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)  # the ids below are this test's own
    log = tmp_path / "jobs.log"
    with pytest.raises(SystemExit, match=r"--jobs 0: expected at least 1"):
        Jobs(0, None, log)
    with pytest.raises(SystemExit, match=r"--devices '0,': expected comma-separated device ids"):
        Jobs(2, ["0", ""], log)
    # Four jobs on two slots, one per device: the first two start together, one on each device, and every
    # later job takes the device a finished one gave back.
    jobs = Jobs(2, ["3", "5"], log)
    prepares = [
        jobs.submit(
            "prepare",
            "--source",
            str(corpus / "corpus"),
            "--out",
            str(tmp_path / f"d{i}"),
            "--vocab-size",
            "300",
            "--val-fraction",
            "0.1",
        )
        for i in range(4)
    ]
    assert all(f.result() > 0 for f in prepares)
    headers = [
        next(
            line
            for line in (tmp_path / "logs" / f"d{i}.log").read_text().splitlines()
            if line.startswith("# on device")
        )
        for i in range(4)
    ]
    assert {headers[0], headers[1]} == {"# on device 3", "# on device 5"}
    assert set(headers[2:]) <= {"# on device 3", "# on device 5"}
    jobs.close()
    # Device ids count the devices the script sees, as a CUDA program would.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7,9")
    assert list(Jobs(3, ["1", "0"], log).slots.queue) == ["9", "7", "9"]
    with pytest.raises(SystemExit, match=r"--devices '0,2': \['2'\] not among the 2 devices of CUDA_VISIBLE_DEV"):
        Jobs(2, ["0", "2"], log)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    # After a failure nothing queued starts, and both futures say why.
    jobs = Jobs(1, None, log)
    bad = jobs.submit("report", str(tmp_path / "missing"), "--out", str(tmp_path / "r"))
    queued = jobs.submit("prepare", "--source", str(corpus / "corpus"), "--out", str(tmp_path / "never"))
    with pytest.raises(SystemExit, match=r"failed: ligo-ds report .*missing"):
        bad.result()
    with pytest.raises(SystemExit, match=r"not started after another job failed: ligo-ds prepare"):
        queued.result()
    jobs.close()
    assert not (tmp_path / "never").exists()
    # A job that exits 0 short of its end (a run stopped on request checkpoints and exits 0) is no result:
    # the study stops there, and no record says the run was made.
    jobs = Jobs(1, None, log)
    args = ("prepare", "--source", str(corpus / "corpus"), "--out", str(tmp_path / "d4"), "--vocab-size", "300")
    stopped = jobs.submit(*args, "--val-fraction", "0.1", done=tmp_path / "d4" / "not_written")
    with pytest.raises(SystemExit, match=r"stopped before its end: ligo-ds prepare .*; rerun to resume it"):
        stopped.result()
    jobs.close()
    assert (tmp_path / "d4" / "meta.json").is_file() and not (tmp_path / "d4" / "savings_job.json").exists()


def test_code_corpus_selects_by_hash_and_leaves_out_tests(tmp_path):
    sys.path.insert(0, str(ROOT / "bench"))
    from code_corpus import write_corpus

    src = tmp_path / "site"
    for i in range(200):
        (src / f"pkg{i % 7}" / ("tests" if i % 10 == 0 else "mod")).mkdir(parents=True, exist_ok=True)
        (src / f"pkg{i % 7}" / ("tests" if i % 10 == 0 else "mod") / f"m{i}.py").write_text(f"x = {i}\n" * 40)
    (src / "tiny.py").write_text("x = 1\n")
    docs, size = write_corpus(tmp_path / "all", share=1.0, root=src)
    assert docs == 180 and size == sum(len(f.read_bytes()) for f in (tmp_path / "all").iterdir())
    half, _ = write_corpus(tmp_path / "half", share=0.5, root=src)
    again, _ = write_corpus(tmp_path / "again", share=0.5, root=src)
    assert 60 < half < 120 and half == again
    assert sorted(p.name for p in (tmp_path / "half").iterdir()) == sorted(
        p.name for p in (tmp_path / "again").iterdir()
    )
    with pytest.raises(SystemExit, match=r"--share 0.0: expected a fraction"):
        write_corpus(tmp_path / "none", share=0.0, root=src)


def test_best_of_picks_the_lowest_loss_and_warns_at_a_sweep_edge(capsys):
    sys.path.insert(0, str(ROOT / "bench"))
    from savings import best_of

    inside = [(5.71, 1e-3, "a"), (5.64, 2e-3, "b"), (5.89, 4e-3, "c")]
    assert best_of(inside, "small model", "gpt2") == (5.64, 2e-3, "b")
    err = capsys.readouterr().err
    assert "small model final val by lr: 0.001: 5.7100, 0.002: 5.6400, 0.004: 5.8900 -> lr 0.002" in err
    assert "warning" not in err
    edge = [(5.50, 1e-3, "a"), (5.64, 2e-3, "b"), (5.89, 4e-3, "c")]
    assert best_of(edge, "scratch", "llama")[1] == 1e-3
    assert "warning: the best scratch lr 0.001 is at the edge of the sweep" in capsys.readouterr().err
    # Two lrs have no inside, so no edge warning: the sweep is too short to bracket anything.
    assert best_of(edge[:2], "scratch", "llama")[1] == 1e-3 and "warning" not in capsys.readouterr().err


def test_final_val_of_a_run_without_evaluation_names_the_run(tmp_path):
    sys.path.insert(0, str(ROOT / "bench"))
    from jobs import final_val

    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 8, "loss": 3.0, "flops": 1e9}) + "\n")
    with pytest.raises(SystemExit, match=rf"{tmp_path}'?: its metrics.jsonl holds no validation loss"):
        final_val(tmp_path)
    (tmp_path / "metrics.jsonl").write_text(
        "".join(
            json.dumps({"step": s, "val_loss": v, "flops": 1e9 * s}) + "\n" for s, v in ((0, 9.0), (4, 5.0), (8, 4.5))
        )
    )
    assert final_val(tmp_path) == 4.5


def test_every_variant_is_a_grow_command_the_cli_accepts():
    """A variant whose flag is misspelt or whose value does not parse would fail minutes into a study;
    here each one is applied to a LiGO command, parsed by `ligo-ds grow` itself, and may change only the
    options it names."""
    sys.path.insert(0, str(ROOT / "bench"))
    from ligo_ds.cli import build_parser
    from ligo_ds.growth.grow import GrowOptions
    from ligo_ds.options import from_args, to_flat

    from ligo_variants import HEURISTIC_VARIANTS, VARIANTS, with_flags

    base = cli(
        "grow",
        source="s",
        target="t.json",
        data="d",
        out="o",
        fit_steps=12,
        width_init="random",
        depth_init="stack",
        operator_warmup=2,
        max_steps=10,
        warmup_steps=2,
    )
    parser = build_parser()

    def parsed(argv: list[str]) -> dict:
        return to_flat(from_args(GrowOptions, parser.parse_args(argv)))

    before = parsed(base)
    for name, flags in [*VARIANTS.items(), *((n, f) for n, (_, f) in HEURISTIC_VARIANTS.items())]:
        after = parsed(with_flags(base, flags))
        named = {option: option.lstrip("-").replace("-", "_") for option in flags}
        assert {k for k in after if after[k] != before[k]} <= set(named.values()), name
        for option, value in flags.items():  # each named value arrives as grow itself parses it
            assert after[named[option]] == parsed([*base, option, value])[named[option]], name
    fit0 = parsed(with_flags(base, VARIANTS["fit0"]))
    assert (fit0["fit_steps"], fit0["width_init"], fit0["depth_init"]) == (0, "random", "stack")


def test_budget_study_tiny_runs_a_savings_study_per_budget_and_tabulates_them(corpus, tmp_path):
    """bench/budgets.py --preset tiny: a whole savings study per tokens-per-parameter budget (lengths from the
    budget), one table row per cell with each method's own-schedule saving and LiGO's lead, the trend table,
    the CSV and the plot; a rerun runs nothing and tabulates the same."""
    study = [sys.executable, str(ROOT / "bench" / "budgets.py"), *to_args(preset="tiny", source=corpus / "corpus")]
    study += ["--out", str(tmp_path)]
    out = subprocess.run(study, capture_output=True, text=True, timeout=900, env=job_env(), cwd=ROOT)
    assert out.returncode == 0, out.stderr[-4000:]
    ran = _jobs_run(out.stderr)
    grown = [f"grow {m}{x}" for m in ("net2net_zero", "ligo") for x in ("_0.5x_lemon", "")]
    cell = ["pretrain small_lr0.003", "pretrain scratch_lr0.003", *grown, "report report"]
    assert ran == ["prepare data", *cell, *cell], ran
    root = tmp_path / "budgets-tiny"
    # 0.01 and 0.02 tokens per parameter of the 124,672-parameter target at 4 x 32 tokens a step
    steps = [
        json.loads((root / f"tiny_tpp{t}/gpt2/runs/scratch_lr0.003/config.json").read_text()) for t in ("0.01", "0.02")
    ]
    assert [s["identity"]["total_steps"] for s in steps] == [10, 19]
    rows = [line for line in out.stdout.splitlines() if line.startswith("| tiny | gpt2 | 124672 |")]
    assert [r.split(" | ")[3] for r in rows] == ["0.01", "0.02"] and all(" pt |" in r for r in rows), rows
    assert "| tiny | gpt2 | ligo | " in out.stdout, out.stdout  # the trend, per size and family
    assert (root / "budgets.png").read_bytes()[:4] == b"\x89PNG"
    assert (root / "budgets.csv").read_text().count("\n") == 3
    again = subprocess.run(study, capture_output=True, text=True, timeout=900, env=job_env(), cwd=ROOT)
    assert again.returncode == 0 and _jobs_run(again.stderr) == ["report report"] * 2, again.stderr[-2000:]
    assert (root / "budgets.md").read_text() in again.stdout


def test_budget_rules_and_trend():
    """A cell's lengths follow its budget (warmup 7.5 %, 16 evaluations, the fit 3.75 % within [5, 100]); the
    trend line finds where a falling saving crosses a level, and none for a rising one."""
    sys.path.insert(0, str(ROOT / "bench"))
    import budgets

    fams = budgets.SIZES["cpu"]["1m"]
    cells = {t: budgets.cell_preset(budgets.BASE["cpu"], fams, t) for t in (0.15, 1, 16)}
    assert budgets.target_params(fams["gpt2"][1]) == 1_071_872
    assert [(c.large_steps, c.warmup, c.eval_every, c.fit_steps) for c in cells.values()] == [
        (79, 6, 4, 5),
        (523, 39, 32, 20),
        (8374, 628, 523, 100),
    ]
    # the second family: a target of about the same size, trained as long (the first family sets the length),
    # its own small model's sweep, and the command line's lrs over both
    assert budgets.target_params(fams["llama"][1]) == 1_000_576
    cp = budgets.cell_preset(budgets.replace(budgets.BASE["cpu"], **budgets.SIZE_LRS["1m"]), fams, 1)
    llama, gpt2 = (budgets.family_preset(cp, "1m", f, {}) for f in ("llama", "gpt2"))
    assert (llama.large_steps, llama.small_lrs, gpt2.small_lrs) == (523, (2e-3, 4e-3), (4e-3,))
    assert llama.scratch_lrs == gpt2.scratch_lrs == (1e-3, 2e-3, 4e-3, 8e-3)
    assert budgets.family_preset(cp, "1m", "llama", {"small_lrs": (1e-3,)}).small_lrs == (1e-3,)
    # the trend is per size and family
    got = {"ligo": {"own_saving": "0.6", "at_least": "0"}}
    two = {budgets.Cell("1m", f, t, 1234, 1, 1): got for f in ("gpt2", "llama") for t in (1.0, 4.0)}
    two[budgets.Cell("1m", "llama", 4.0, 1234, 1, 1)] = {"ligo": {"own_saving": "0.3", "at_least": "0"}}
    rows = [r for r in budgets.trend(two, ("ligo",)).splitlines() if r.startswith("| 1m")]
    assert rows == [
        "| 1m | gpt2 | ligo | 1, 4 | not within the budgets measured | - |",
        "| 1m | llama | ligo | 1, 4 | not within the budgets measured | 16 (extrapolated) |",
    ], rows
    bad = [sys.executable, str(ROOT / "bench" / "budgets.py"), "--preset", "tiny", "--families", "llama"]
    out = subprocess.run(bad, capture_output=True, text=True, timeout=120, env=job_env(), cwd=ROOT)
    assert out.returncode != 0 and "--families 'llama': unknown ['llama']; expected some of gpt2" in out.stderr
    assert budgets.where_it_falls([(0.1, 0.8), (1, 0.6), (10, 0.4)], 0.0) == pytest.approx(1e3)
    assert budgets.where_it_falls([(0.1, 0.4), (1, 0.6)], 0.0) is None and budgets.where_it_falls([(1, 0.5)], 0) is None
    # seeds of one cell: mean and sample sd of each saving and lead; a seed that never reached it is counted
    row = ["1m", "gpt2", 1, 1.0, 10, 1234, 4.0, 4.5]
    # table()'s rows: cell, the small model's loss, savings, the lead, small alone reaches target, then whether
    # each saving is a bound
    rows = [
        [*row[:5], seed, 4.0, 4.5, zero, ligo, ligo - zero, False, False, False]
        for seed, zero, ligo in ((1, 0.5, 0.6), (2, 0.7, 0.6))
    ]
    rows.append([*row, None, 0.6, None, False, False, True])
    seeds = budgets.over_seeds(rows, ("net2net_zero", "ligo"))
    assert "| 1,2,1234 | 1 of 3 not reached | 60.0 (sd 0.0) with lower bounds | 1 of 3 not reached |" in seeds
    assert budgets.over_seeds(rows[:2], ("net2net_zero", "ligo")).endswith(
        "| 60.0 (sd 14.1) | 60.0 (sd 0.0) | 0.0 (sd 14.1) |\n"
    )


def test_budget_variants_change_one_thing_and_lead_against_each_cells_best_heuristic(tmp_path):
    """Item 4's variants are their fitted method's command with one change (the fit's batch, no init noise, no fit),
    and their table gives each one's lead over the cell's best heuristic, "-" where it was not run, and a mean
    lead that leaves lower bounds out. budgets.csv records every method of every cell, so the tables come back
    from it when the runs are gone (--earlier)."""
    sys.path.insert(0, str(ROOT / "bench"))
    import budgets

    import savings

    runs = savings.grown_runs(savings.PRESETS["cpu"])
    changed = {}
    for v in savings.VARIANTS:
        steps, options = runs[v]
        base_steps, base = runs[v.split("-")[0]]
        assert options[: len(base)] == base, v
        changed[v] = options[len(base) :] or ["--fit-steps", str(steps)]
        assert steps == base_steps or options == base, v
    assert changed == {
        "ligo-fullbatch": ["--fit-micro-batch", "16"],
        "ligo-quiet": ["--init-noise", "0"],
        "ligo-nofit": ["--fit-steps", "0"],
        "fitted_zero-fullbatch": ["--fit-micro-batch", "16"],
    }
    assert all(savings.parse_run_name(f"{v}_0.3x_lemon") == (v, 0.3, "lemon") for v in savings.VARIANTS)

    def got(**savings_):
        return {m: {"own_saving": str(abs(v)), "at_least": "1" if v < 0 else "0"} for m, v in savings_.items()}

    cell = budgets.Cell("1m", "gpt2", 1.0, 1234, 1, 1)
    cells = {
        cell: got(net2net_stack=0.4, net2net_zero=0.5, ligo=0.55, **{"ligo-fullbatch": 0.6}),
        dataclasses.replace(cell, seed=1): got(
            net2net_stack=0.3, net2net_zero=0.2, ligo=0.45, **{"ligo-fullbatch": -0.7}
        ),
        dataclasses.replace(cell, seed=2): got(net2net_stack=0.3, net2net_zero=0.2, ligo=0.9),
    }
    md = budgets.variant_table(cells, ("net2net_stack", "net2net_zero"), ("ligo", "ligo-fullbatch", "ligo-quiet"))
    lines = md.splitlines()
    assert "| 1m | gpt2 | 1 | 1234 | net2net_zero 50.0 % | 55.0 % (+5.0 pt) | 60.0 % (+10.0 pt) | - |" in lines
    assert "| 1m | gpt2 | 1 | 1 | net2net_stack 30.0 % | 45.0 % (+15.0 pt) | >= 70.0 % (+40.0 pt) | - |" in lines
    assert not any("| 2 |" in line for line in lines), md  # no variant ran at seed 2
    assert lines[-1] == "| 1m | gpt2 | 1 | mean lead |  | +10.0 pt over 2 | +10.0 pt over 1 | - |"
    assert budgets.variant_table({cell: got(net2net_zero=0.5, ligo=0.6)}, ("net2net_zero",), ("ligo",)) == ""
    # the main table tells a method this cell did not run from one that never reached the target
    scratch = {"_scratch": {"final_val": "4.0", "small_final_val": "4.5", "small_reaches_target": "False"}}
    one = {cell: {**got(net2net_zero=0.5), "ligo": {"own_saving": ""}, **scratch}}
    md, rows, ran = budgets.table(one, ("net2net_stack", "net2net_zero", "ligo"))
    assert "| 4.0000 | 4.5000 | not run | 50.0 % | not reached |" in md, md
    # the record: variants, bounds, "not run" and "not reached" all come back, and so do the tables
    full = {c: {**got_, **scratch} for c, got_ in cells.items()}
    full[dataclasses.replace(cell, seed=2)]["net2net_zero"] = {"own_saving": "", "at_least": "0"}
    md = budgets.summarise(tmp_path, full, ("net2net_stack", "net2net_zero", "ligo"))
    assert "ligo-fullbatch run" in (tmp_path / "budgets.csv").read_text() and "not reached" in md, md
    back = budgets.read_record(tmp_path / "budgets.csv")
    kept = ("own_saving", "at_least", "final_val", "small_final_val", "small_reaches_target")
    assert back == {
        c: {m: {k: v for k, v in row.items() if k in kept} for m, row in g.items()} for c, g in full.items()
    }
    (tmp_path / "again").mkdir()
    assert budgets.summarise(tmp_path / "again", back, ("net2net_stack", "net2net_zero", "ligo")) == md
    (tmp_path / "old.csv").write_text("size,family\n1m,gpt2\n")
    (tmp_path / "bad.csv").write_text((tmp_path / "budgets.csv").read_text().replace(",1234,", ",x,"))
    cases = [(tmp_path / "old.csv", "no '<method> run' columns"), (tmp_path / "none.csv", "No such file")]
    cases.append((tmp_path / "bad.csv", r"line \d: ValueError.*'x'"))
    for path, why in cases:
        with pytest.raises(SystemExit, match=why):
            budgets.read_record(path)
    # over seeds, a method some seeds did not run is averaged over those that did, and names the others
    two = {**one, dataclasses.replace(cell, seed=1): {**got(net2net_stack=0.3, net2net_zero=0.7, ligo=0.8), **scratch}}
    md, rows, ran = budgets.table(two, ("net2net_stack", "net2net_zero", "ligo"))
    assert ran == [[True] * 3, [False, True, True]]
    assert budgets.over_seeds(rows[1:], ("net2net_stack", "net2net_zero", "ligo"), ran).splitlines()[-1] == (
        "| 1m | gpt2 | 1 | 1,1234 | 30.0 (one seed), not run at 1234 | 60.0 (sd 14.1) | 1 of 2 not reached "
        "| 1 of 2 not reached |"
    )


def _jobs_run(stderr: str) -> list[str]:
    """'SUBCOMMAND RUN' of each job a bench script ran (it prints one line per job with its seconds)."""
    return [line.split(":")[0].strip() for line in stderr.splitlines() if line.endswith(" s")]


def _check_ligo_variants(study, runs):
    """bench/ligo_variants.py on a finished tiny study: a variant is the study's LiGO command with only its
    flags changed; at the study's seed the study's baselines are reused, at another seed they run again."""
    sys.path.insert(0, str(ROOT / "bench"))
    from jobs import flag
    from ligo_variants import recorded

    script = [sys.executable, str(ROOT / "bench" / "ligo_variants.py"), "--study", str(study), "--family", "gpt2"]
    same = subprocess.run(
        [*script, "--variants", "study,noise0.03,zero_noise0.03"],
        capture_output=True,
        text=True,
        timeout=900,
        env=job_env(),
        cwd=ROOT,
    )
    assert same.returncode == 0, same.stderr[-4000:]
    assert _jobs_run(same.stderr) == ["grow noise0.03", "grow zero_noise0.03", "report report"]
    variants = study / "variants" / "gpt2" / "seed1234"
    variant = recorded(variants / "noise0.03", variants)
    ligo = recorded(runs / "ligo", study)
    assert {a for a in variant if a not in ligo} == {"--init-noise", "0.03", str(variants / "noise0.03")}
    assert {a for a in ligo if a not in variant} == {str(runs / "ligo")}
    # A heuristic variant is that heuristic's command with the same change, so the change is credited to both.
    zero_variant, zero = recorded(variants / "zero_noise0.03", variants), recorded(runs / "net2net_zero", study)
    assert {a for a in zero_variant if a not in zero} == {"--init-noise", "0.03", str(variants / "zero_noise0.03")}
    assert flag(zero_variant, "--fit-steps") == "0" and "| zero_noise0.03 | - |" in same.stdout
    assert "| study | " in same.stdout and "| noise0.03 | " in same.stdout and "| net2net_zero | - |" in same.stdout
    # --flags changes every job, so the baselines run again even at the study's seed. A denser evaluation
    # changes no run's training: the final losses equal the study's, and only the curves have more points.
    dense = subprocess.run(
        [*script, "--variants", "study", "--heuristics", "net2net_zero", "--flags=--eval-every 2 --log-every 2"],
        capture_output=True,
        text=True,
        timeout=900,
        env=job_env(),
        cwd=ROOT,
    )
    assert dense.returncode == 0, dense.stderr[-4000:]
    assert _jobs_run(dense.stderr) == ["pretrain scratch_lr0.003", "grow net2net_zero", "grow study", "report report"]
    finer = study / "variants_eval-every2_log-every2" / "gpt2" / "seed1234"
    for new, old in (
        (finer / "scratch_lr0.003", runs / "scratch_lr0.003"),
        (finer / "net2net_zero" / "train", runs / "net2net_zero" / "train"),
        (finer / "study" / "train", runs / "ligo" / "train"),
    ):
        new_val, old_val = (
            [r["val_loss"] for r in read_metrics(d / "metrics.jsonl") if "val_loss" in r] for d in (new, old)
        )
        assert new_val[-1] == old_val[-1] and len(new_val) > len(old_val)
    unknown = subprocess.run(
        [*script, "--variants", "study,nope"], capture_output=True, text=True, timeout=120, env=job_env(), cwd=ROOT
    )
    assert unknown.returncode != 0 and "--variants: unknown ['nope']" in unknown.stderr
