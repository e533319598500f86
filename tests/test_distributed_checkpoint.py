"""distributed/checkpoint.py: a checkpoint counts only when its manifest checks out, file by file. The
save and load paths run for real in test_trainer.py and test_reliability.py."""

from __future__ import annotations

import json

import pytest

from ligo_ds import ConfigError
from ligo_ds.distributed.checkpoint import MANIFEST, latest_tag, read_manifest


def checkpoint(root, files):
    tag = root / "step4"
    tag.mkdir(parents=True)
    for name, size in files.items():
        (tag / name).parent.mkdir(parents=True, exist_ok=True)
        (tag / name).write_bytes(b"x" * size)
    manifest = {"tag": "step4", "world_size": 2, "zero_stage": 3, "files": files}
    (tag / MANIFEST).write_text(json.dumps(manifest))
    (root / "latest").write_text("step4")
    return tag


def test_a_complete_checkpoint_reads_back(tmp_path):
    checkpoint(tmp_path, {"a.pt": 10, "sub/b.pt": 3})
    assert latest_tag(tmp_path) == "step4" and read_manifest(tmp_path, "step4")["world_size"] == 2
    assert latest_tag(tmp_path / "absent") is None


def test_missing_truncated_or_unmanifested_files_are_named(tmp_path):
    tag = checkpoint(tmp_path, {"a.pt": 10, "sub/b.pt": 3, "c.pt": 5})
    (tag / "sub" / "b.pt").unlink()
    (tag / "c.pt").write_bytes(b"x")
    with pytest.raises(ConfigError, match=r"is incomplete: missing sub/b.pt; c.pt has 1 bytes, 5 were written"):
        read_manifest(tmp_path, "step4")
    (tag / MANIFEST).unlink()
    with pytest.raises(ConfigError, match=f"has no {MANIFEST}: it was not completed by ligo_ds"):
        read_manifest(tmp_path, "step4")
