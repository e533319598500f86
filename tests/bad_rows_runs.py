"""Bad-input rows for runs, data and outputs: (name, setup(world, tmp) -> argv, the one error line it must
print, as a regular expression). test_bad_input.py runs them."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

from ligo_ds.data.reading import staging_dir

from badinput import TINY, env, fit, mount_tmpfs, pretrain, write_json
from conftest import cli, make_hf_model, make_tokenizer


def corrupt_safetensors(w, tmp):
    bad = tmp / "corrupt"
    make_hf_model(TINY).save_pretrained(bad)
    (bad / "model.safetensors").write_bytes((bad / "model.safetensors").read_bytes()[:500])
    return ["inspect", "--model", str(bad)]


def export_into_a_users_folder(w, tmp):
    mine = tmp / "mine"
    (mine / "sub").mkdir(parents=True)
    (mine / "notes.txt").write_text("the user's notes\n")
    (mine / "sub" / "x.txt").write_text("more\n")
    return ["export", str(w / "run"), "--out", str(mine)]


def export_of_a_run_onto_itself(w, tmp):
    run = tmp / "run"
    subprocess.run(["cp", "-r", str(w / "run"), str(run)], check=True)
    return ["export", str(run), "--out", str(run)]


def export_onto_the_parent_folder(w, tmp):
    # `--out ..` from inside a folder: the parent, which holds the user's files, is what it names.
    (tmp / "mine").mkdir()
    (tmp / "mine" / "notes.txt").write_text("the user's notes\n")
    return ["export", str(w / "run"), "--out", str(tmp / "mine" / "..")]


def missing_rank_file(w, tmp):
    run = tmp / "run"
    subprocess.run(["cp", "-r", str(w / "run"), str(run)], check=True)
    for f in (run / "checkpoints" / "step4").glob("*optim_states.pt"):
        f.unlink()
    return ["export", str(run), "--out", str(tmp / "exported")]


def missing_rank_file_on_resume(w, tmp):
    missing_rank_file(w, tmp)
    run = tmp / "run"
    (run / "checkpoints" / "latest").write_text("step4")
    return pretrain(w, run)


def typo_key(w, tmp):
    return pretrain(w, tmp / "run", "--config", str(write_json(tmp / "run.json", {"warmup_step": 2})))


def smaller_target(w, tmp):
    return fit(w, write_json(tmp / "t.json", {**TINY, "num_hidden_layers": 1}), tmp / "f")


def other_vocab(w, tmp):
    return fit(w, write_json(tmp / "t.json", {**TINY, "vocab_size": 512}), tmp / "f")


def empty_corpus(w, tmp):
    (tmp / "empty.txt").write_text("")
    return ["prepare", "--source", str(tmp / "empty.txt"), "--out", str(tmp / "d")]


def not_utf8(w, tmp):
    (tmp / "latin1.txt").write_bytes("caf\u00e9 au lait\n".encode("latin-1"))
    (tmp / "ok.txt").write_text("fine\n")
    return ["prepare", "--source", f"{tmp / 'ok.txt'},{tmp / 'latin1.txt'}", "--out", str(tmp / "d")]


def missing_ds_config(w, tmp):
    return pretrain(w, tmp / "run", "--ds-config", str(tmp / "nothere.json"))


def ds_config_against_fit_flags(w, tmp):
    """A DS config that fixes the micro-batch and lr, against grow's fit-phase flags: the error names the flag
    the fit's value came from (--fit-micro-batch, --operator-lr), not the training phase's."""
    ds = write_json(
        tmp / "ds.json",
        {
            "train_micro_batch_size_per_gpu": 2,
            "zero_optimization": {"stage": 2},
            "optimizer": {"type": "AdamW", "params": {"lr": 0.002}},
        },
    )
    return grow_with_fit_batch(w, tmp, ds, fit_micro_batch=1)


def grow_with_fit_batch(w, tmp, ds: Path, fit_micro_batch: int) -> list[str]:
    deeper = write_json(tmp / "t.json", {**TINY, "num_hidden_layers": 3})
    return cli(
        "grow",
        source=w / "small",
        target=deeper,
        data=w / "data",
        out=tmp / "g",
        fit_steps=2,
        operator_warmup=1,
        max_steps=2,
        warmup_steps=1,
        seq_len=16,
        micro_batch=2,
        fit_micro_batch=fit_micro_batch,
        lr="0.002",
        ds_config=ds,
    )


def existing_run_other_config(w, tmp):
    run = tmp / "run"
    subprocess.run(["cp", "-r", str(w / "run"), str(run)], check=True)
    return pretrain(w, run, "--seq-len", "8")


def read_only_out(w, tmp):
    mount_tmpfs(tmp / "ro", "ro,size=1m")
    return ["prepare", "--source", str(w / "corpus"), "--out", str(tmp / "ro" / "data"), "--vocab-size", "300"]


def disk_full(w, tmp):
    mount_tmpfs(tmp / "small", "size=400k")
    data = tmp / "small" / "data"
    subprocess.run(["cp", "-r", str(w / "data"), str(data)], check=True)  # an existing dataset, replaced by --force
    big = tmp / "big"
    big.mkdir()
    for i in range(30):
        (big / f"{i}.txt").write_text(f"payload {i} " * 4000)
    argv = ["prepare", "--source", str(big), "--out", str(data), "--force", "--vocab-size", "300"]
    return argv, [str(staging_dir(data))]  # the work done so far, kept to resume once there is space


def pickle_checkpoint(w, tmp):
    bad = tmp / "pickled"
    bad.mkdir()
    write_json(bad / "config.json", TINY)
    import pickle

    class Boom:
        def __reduce__(self):
            return (os.system, (f"touch {tmp / 'pwned'}",))

    (bad / "pytorch_model.bin").write_bytes(pickle.dumps({"model.embed_tokens.weight": Boom()}))
    return ["inspect", "--model", str(bad)]


def model_with_another_tokenizer(w, tmp):
    model = tmp / "with_tokenizer"
    subprocess.run(["cp", "-r", str(w / "small"), str(model)], check=True)
    make_tokenizer(model, "llama2")
    return pretrain(w, tmp / "run", "--model", str(model))


def tokenizer_without_eos(w, tmp):
    model = make_tokenizer(tmp / "no_eos", "no_eos")
    return ["prepare", "--source", str(w / "corpus"), "--tokenizer", str(model), "--out", str(tmp / "d")]


def export_of_an_initialisation_only_fit(w, tmp):
    deeper = write_json(tmp / "t.json", {**TINY, "num_hidden_layers": 3})
    run = subprocess.run(
        [sys.executable, "-m", "ligo_ds", *fit(w, deeper, tmp / "f")], capture_output=True, text=True, env=env()
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return ["export", str(tmp / "f"), "--out", str(tmp / "exported")]


def _data_copy(w, tmp) -> Path:
    data = tmp / "data"
    subprocess.run(["cp", "-r", str(w / "data"), str(data)], check=True)
    return data


def corrupt_shard(w, tmp):
    data = _data_copy(w, tmp)
    shard = data / "train-00000.bin"
    raw = bytearray(shard.read_bytes())
    raw[10] ^= 1  # same size: only the checksum tells
    shard.write_bytes(bytes(raw))
    argv = pretrain(w, tmp / "run")
    argv[argv.index("--data") + 1] = str(data)
    return argv


def truncated_shard(w, tmp):
    data = _data_copy(w, tmp)
    shard = data / "val-00000.bin"
    shard.write_bytes(shard.read_bytes()[:-4])
    return ["eval", str(w / "small"), "--data", str(data), "--seq-len", "16"]


def mixture_of_tokenizers(w, tmp):
    other = tmp / "other"
    prepare = ["prepare", "--source", str(w / "corpus"), "--out", str(other), "--vocab-size", "300"]
    assert (
        subprocess.run([sys.executable, "-m", "ligo_ds", *prepare, "--val-fraction", "0.2"], env=env()).returncode == 0
    )
    argv = pretrain(w, tmp / "run")
    argv[argv.index("--data") + 1] = f"{w / 'data'}=0.5,{other}=0.5"
    return argv


def prepare_of_another_command(w, tmp):
    out = tmp / "d"
    argv = ["prepare", "--source", str(w / "corpus"), "--out", str(out), "--vocab-size", "300", "--val-fraction", "0.2"]
    assert subprocess.run([sys.executable, "-m", "ligo_ds", *argv], env=env(), capture_output=True).returncode == 0
    return [*argv[:-1], "0.3"]


def hub_dataset_offline(w, tmp):
    return ["prepare", "--source", "hub:nobody/nothing", "--split", "validation", "--out", str(tmp / "d")]


ROWS = [
    ("corrupt or truncated safetensors", corrupt_safetensors, "is not a readable safetensors file"),
    (
        "checkpoint missing a rank file (export)",
        missing_rank_file,
        "checkpoint .*step4' is incomplete: missing zero_pp_rank_0_mp_rank_00_optim_states.pt",
    ),
    (
        "checkpoint missing a rank file (resume)",
        missing_rank_file_on_resume,
        "checkpoint .*step4' is incomplete: missing zero_pp_rank_0_mp_rank_00_optim_states.pt",
    ),
    ("typo'd key in our config", typo_key, "unknown key 'warmup_step' \\(did you mean 'warmup_steps'\\?\\)"),
    ("target smaller than the source", smaller_target, "the target is smaller than the source: [\\d,]+ parameters <"),
    ("different vocabulary", other_vocab, "vocabularies differ: source vocab_size 320, target 512"),
    ("empty corpus", empty_corpus, "is empty \\(no non-empty documents\\)"),
    ("non-UTF-8 text", not_utf8, "latin1.txt' is not UTF-8 text \\(invalid byte at offset 3\\)"),
    ("corrupt data shard", corrupt_shard, "shard .*train-00000.bin' does not match the SHA-256 meta.json lists"),
    ("truncated data shard", truncated_shard, "shard .*val-00000.bin': \\d+ bytes, but meta.json lists \\d+ tokens"),
    ("mixture of tokenizers", mixture_of_tokenizers, "other' was tokenized with another tokenizer .*one tokenizer"),
    (
        "prepare into another command's DATA_DIR",
        prepare_of_another_command,
        "holds the output of another prepare command \\(val_fraction: 0.2 -> 0.3\\)",
    ),
    (
        "hub dataset missing offline",
        hub_dataset_offline,
        "cannot load hub dataset 'nobody/nothing' .*split 'validation'",
    ),
    ("missing ds config", missing_ds_config, "ds config .*nothere.json' does not exist"),
    (
        "ds config against the fit's flags",
        ds_config_against_fit_flags,
        "sets train_micro_batch_size_per_gpu=2 but --fit-micro-batch gives 1",
    ),
    (
        "--out is a run with another config",
        existing_run_other_config,
        "belongs to a different run; refusing to resume it. Differences: seq_len: 16 in the run, 8 now",
    ),
    ("read-only output directory", read_only_out, "Read-only file system"),
    ("disk full", disk_full, "No space left on device"),
    ("pickled checkpoint", pickle_checkpoint, "refusing to load .*pytorch_model.bin'"),
    (
        "data from another tokenizer than the model's",
        model_with_another_tokenizer,
        "was tokenized with another tokenizer .* than the --model model .*with_tokenizer' has .*"
        "--allow-tokenizer-mismatch",
    ),
    ("tokenizer without eos", tokenizer_without_eos, "names no end-of-sequence token .*pass --eos-token TOKEN"),
    (
        "export into a folder of the user's",
        export_into_a_users_folder,
        "mine' is not empty \\(notes.txt, sub\\) and is not a checkpoint ligo_ds wrote; nothing was written",
    ),
    ("export of a run onto itself", export_of_a_run_onto_itself, "run' is not empty .* not a checkpoint ligo_ds wrote"),
    ("export --out ..", export_onto_the_parent_folder, "is not empty \\(mine\\) and is not a checkpoint ligo_ds"),
    (
        "export of a fit --steps 0",
        export_of_an_initialisation_only_fit,
        "is a fit with --steps 0, which keeps no checkpoint: its grown model is .*f/hf'",
    ),
]


# ---- issue 44's reproductions: paths, ids, locks, validation before writing ---------------------------


def _meta_edit(data: Path, edit) -> None:
    meta = json.loads((data / "meta.json").read_text())
    edit(meta)
    (data / "meta.json").write_text(json.dumps(meta))


def shard_outside_its_folder(w, tmp):
    data = _data_copy(w, tmp)
    (tmp / "x.bin").write_bytes((data / "train-00000.bin").read_bytes())
    _meta_edit(data, lambda m: m["splits"]["train"]["shards"][0].update(file="../x.bin"))
    return _pretrain_on(w, tmp, data)


def shard_by_absolute_path(w, tmp):
    data = _data_copy(w, tmp)
    _meta_edit(data, lambda m: m["splits"]["train"]["shards"][0].update(file="/etc/passwd"))
    return _pretrain_on(w, tmp, data, "--verify-data", "size")


def shard_symlinked_out(w, tmp):
    data = _data_copy(w, tmp)
    (tmp / "x.bin").write_bytes((data / "train-00000.bin").read_bytes())
    (data / "train-00000.bin").unlink()
    (data / "train-00000.bin").symlink_to(tmp / "x.bin")
    return _pretrain_on(w, tmp, data)


def shard_without_checksum(w, tmp):
    data = _data_copy(w, tmp)
    _meta_edit(data, lambda m: m["splits"]["train"]["shards"][0].pop("sha256"))
    return _pretrain_on(w, tmp, data)


def random_bytes_shard_size_mode(w, tmp):
    data = _data_copy(w, tmp)
    for i, shard in enumerate(sorted(data.glob("train-*.bin"))):  # every shard: whichever the samples land in
        shard.write_bytes(bytes(random.Random(i).randrange(256) for _ in range(shard.stat().st_size)))
    return _pretrain_on(w, tmp, data, "--verify-data", "size")


def random_val_shard_in_eval(w, tmp):
    data = _data_copy(w, tmp)
    shard = data / "val-00000.bin"
    shard.write_bytes(bytes(random.Random(1).randrange(256) for _ in range(shard.stat().st_size)))
    return ["eval", str(w / "small"), "--data", str(data), "--seq-len", "16"]


def ids_beyond_the_vocabulary_by_meta(w, tmp):
    data = _data_copy(w, tmp)
    _meta_edit(data, lambda m: m["splits"]["val"]["shards"][0].update(max_id=400))
    return ["inspect", "--model", str(w / "small"), "--data", str(data)]


def _pretrain_on(w, tmp, data: Path, *extra: str) -> list[str]:
    argv = pretrain(w, tmp / "run", *extra)
    argv[argv.index("--data") + 1] = str(data)
    return argv


def zero_stage_seven(w, tmp):
    return pretrain(
        w, tmp / "run", "--ds-config", str(write_json(tmp / "ds.json", {"zero_optimization": {"stage": 7}}))
    )


def zero_stage_yes(w, tmp):
    ds = write_json(tmp / "ds.json", {"zero_optimization": {"stage": "yes"}})
    return pretrain(w, tmp / "run", "--ds-config", str(ds))


def zero_unknown_key(w, tmp):
    ds = write_json(tmp / "ds.json", {"zero_optimization": {"stage": 2, "overlap_com": True}})
    return pretrain(w, tmp / "run", "--ds-config", str(ds))


def ds_section_deepspeed_refuses(w, tmp):
    ds = write_json(tmp / "ds.json", {"zero_optimization": {"stage": 2}, "comms_logger": {"enabled": "maybe"}})
    return pretrain(w, tmp / "run", "--ds-config", str(ds))


def max_steps_absurd(w, tmp):
    argv = pretrain(w, tmp / "run")
    argv[argv.index("--max-steps") + 1] = "1e30"
    return argv


def out_holding_a_config_that_is_not_json(w, tmp):
    (tmp / "run").mkdir()
    (tmp / "run" / "config.json").write_text("{not json")
    return pretrain(w, tmp / "run")


def grow_over_a_users_grown_folder(w, tmp):
    (tmp / "g" / "grown").mkdir(parents=True)
    (tmp / "g" / "grown" / "notes.txt").write_text("the user's notes\n")
    return _grow(w, tmp / "g")


def grow_into_a_pretrain_run(w, tmp):
    run = tmp / "run"
    subprocess.run(["cp", "-r", str(w / "run"), str(run)], check=True)
    return _grow(w, run)


def _grow(w, out: Path) -> list[str]:
    return cli(
        "grow", source=w / "small", target=w / "tiny.json", data=w / "data", out=out, max_steps=2, warmup_steps=1
    )


def prepare_force_over_a_users_folder(w, tmp):
    (tmp / "mine").mkdir()
    (tmp / "mine" / "notes.txt").write_text("the user's notes\n")
    return ["prepare", "--source", str(w / "corpus"), "--out", str(tmp / "mine"), "--force", "--vocab-size", "300"]


def lone_surrogate_in_json(w, tmp):
    (tmp / "docs.jsonl").write_text('{"text": "fine text here"}\n{"text": "bad \\ud800 here"}\n{"text": "more"}\n')
    return ["prepare", "--source", str(tmp / "docs.jsonl"), "--out", str(tmp / "d"), "--vocab-size", "300"]


def config_from_dev_zero(w, tmp):
    return pretrain(w, tmp / "run", "--config", "/dev/zero")


def report_of_a_row_without_flops(w, tmp):
    run = tmp / "run"
    subprocess.run(["cp", "-r", str(w / "run"), str(run)], check=True)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    rows[-1].pop("flops")
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return ["report", str(run), "--out", str(tmp / "report")]


def export_from_another_directory_with_a_relative_data(w, tmp):
    # A run made with a relative --data, its config.json edited back to the relative form older runs
    # recorded (no cwd), exported from a folder where another DATA exists: the export cannot tell which.
    run = tmp / "run"
    subprocess.run(["cp", "-r", str(w / "run"), str(run)], check=True)
    config = json.loads((run / "config.json").read_text())
    config.pop("cwd", None)
    config["options"].update(data="data", out="elsewhere/run")
    (run / "config.json").write_text(json.dumps(config))
    return ["export", str(run), "--out", str(tmp / "exported")]


ROWS += [
    ("meta.json shard outside its folder", shard_outside_its_folder, "lists the file '../x.bin': expected a plain"),
    ("meta.json shard by absolute path", shard_by_absolute_path, "lists the file '/etc/passwd': expected a plain"),
    ("shard symlinked out of its folder", shard_symlinked_out, "train-00000.bin' .* is a symbolic link out of"),
    ("shard without a checksum", shard_without_checksum, "sha256 is None, expected the shard's SHA-256"),
    (
        "random bytes in a shard under --verify-data size",
        random_bytes_shard_size_mode,
        "train-0000\\d.bin' holds token id \\d+ at position \\d+, beyond the model's vocab_size 320",
    ),
    ("random val shard in eval", random_val_shard_in_eval, "val-00000.bin' holds token id \\d+ at position"),
    (
        "ids beyond the vocabulary (meta)",
        ids_beyond_the_vocabulary_by_meta,
        "holds token ids up to 400 \\(meta.json\\)",
    ),
    ("zero stage 7", zero_stage_seven, "zero_optimization.stage is 7, expected one of 0, 1, 2, 3"),
    ("zero stage 'yes'", zero_stage_yes, "zero_optimization.stage is 'yes', expected one of 0, 1, 2, 3"),
    ("unknown zero key", zero_unknown_key, "zero_optimization.overlap_com is True: Extra inputs are not permitted"),
    (
        "a section DeepSpeed's schema refuses",
        ds_section_deepspeed_refuses,
        "DeepSpeed's .* refuses enabled='maybe': Input should be a valid boolean",
    ),
    ("--max-steps 1e30", max_steps_absurd, "--max-steps 1e\\+30: expected at most 1e\\+15"),
    (
        "--out config.json not JSON",
        out_holding_a_config_that_is_not_json,
        "run config '.*/config.json' is not valid",
    ),
    (
        "grow over a grown/ of the user's",
        grow_over_a_users_grown_folder,
        "grown' is not empty \\(notes.txt\\) and is not a checkpoint ligo_ds wrote",
    ),
    ("grow into a pretrain run", grow_into_a_pretrain_run, "run' holds a pretrain or fit run \\(config.json, metrics"),
    (
        "prepare --force over a user's folder",
        prepare_force_over_a_users_folder,
        "mine' exists, is not empty and is not a DATA_DIR",
    ),
    ("lone surrogate in a JSON line", lone_surrogate_in_json, "docs.jsonl' .*not valid text"),
    ("--config /dev/zero", config_from_dev_zero, "'/dev/zero' is not a regular file"),
    ("report of a row without flops", report_of_a_row_without_flops, "metrics.jsonl' row at step 4 has no flops"),
    (
        "export of a run with a relative data path",
        export_from_another_directory_with_a_relative_data,
        "records its data as the relative path 'data' but not the directory it was relative to",
    ),
]
