"""Checkpoint retention (--keep-last, --keep-every): what is kept, that `latest` never goes, and that a kill
in the middle of pruning leaves a run that resumes to the uninterrupted result."""

from __future__ import annotations

import pytest

from ligo_ds.distributed.checkpoint import PRUNED, prune, read_manifest, to_prune
from ligo_ds.errors import ConfigError

from conftest import refused_up_front, train_args
from procs import ligo

TAGS = [f"step{s}" for s in (2, 4, 6, 8, 10, 12)]


@pytest.mark.parametrize(
    "latest, keep_last, keep_every, removed",
    [
        ("step12", 2, None, ["step2", "step4", "step6", "step8"]),
        ("step12", 1, 4, ["step2", "step6", "step10"]),
        ("step12", 10, None, []),
        # `latest` pointed back by hand (an older, good checkpoint): kept although it is not among the newest
        ("step4", 2, None, ["step2", "step6", "step8"]),
    ],
)
def test_what_retention_removes(latest, keep_last, keep_every, removed):
    assert to_prune(TAGS, latest, keep_last, keep_every) == removed


def test_prune_removes_tags_with_their_conversions_and_leftovers(tmp_path):
    for tag in [*TAGS, "step4_universal", "step6_universal", f"{PRUNED}step1"]:
        (tmp_path / tag).mkdir()
        (tmp_path / tag / "shard.pt").write_bytes(b"x" * 10)
    (tmp_path / "latest").write_text("step12")
    assert prune(tmp_path, keep_last=2, keep_every=4) == ["step2", "step6"]
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["latest", "step10", "step12", "step4", "step4_universal", "step8"]
    with pytest.raises(
        ConfigError, match=r"no checkpoint 'step6' in .* \(there: step4, step8, step10, step12; --keep-last"
    ):
        read_manifest(tmp_path, "step6")


BAD = [
    (["--keep-last", "0"], "--keep-last 0: expected at least 1"),
    (["--keep-every", "4"], "--keep-every 4 keeps checkpoints that --keep-last would remove"),
    (
        ["--keep-last", "2", "--keep-every", "3", "--save-every", "2"],
        "--keep-every 3 is not a multiple of --save-every 2",
    ),
]


@pytest.mark.parametrize("extra, message", BAD, ids=[" ".join(e) for e, _ in BAD])
def test_bad_retention_is_refused_in_one_line(tmp_path, capsys, extra, message):
    refused_up_front(tmp_path, capsys, extra, message)


@pytest.mark.multiproc
def test_a_kill_while_pruning_leaves_a_run_that_resumes_to_the_same_weights(pretrain_setup, pretrain_reference):
    """pretrain_reference's run (6 steps, one process) again, saving every 2 steps and keeping 1: killed
    right after step2 was renamed away for removal, then rerun."""
    out = pretrain_setup / "pruned"
    args = train_args(pretrain_setup, out, *"--max-steps 6 --micro-batch 4 --ds-config zero2".split())
    args += ["--save-every", "2", "--keep-last", "1"]
    killed = ligo("single", 1, args, check=False, LIGO_DS_CRASH_AT="prune:1")
    assert killed.returncode != 0
    ckpts = out / "checkpoints"
    assert (ckpts / "latest").read_text() == "step4" and (ckpts / f"{PRUNED}step2").is_dir()
    assert not (ckpts / "step2").exists()
    result = ligo("single", 1, args)
    assert "from checkpoint step4" in result.stdout and "removed step4" in result.stdout
    assert [p.name for p in ckpts.iterdir() if p.is_dir()] == ["step6"] and (ckpts / "latest").read_text() == "step6"
    ref = (pretrain_reference / "hf" / "model.safetensors").read_bytes()
    assert (out / "hf" / "model.safetensors").read_bytes() == ref
