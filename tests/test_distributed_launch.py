"""distributed/launch.py: every launcher starts the same job, with the same losses."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import losses, train_args
from procs import ligo

pytestmark = pytest.mark.multiproc


@pytest.mark.parametrize("launcher", ["deepspeed", "mpirun"])
def test_launchers_agree(pretrain_setup, pretrain_reference, launcher):
    if launcher == "mpirun" and shutil.which("mpirun") is None:
        pytest.fail("mpirun is missing: .ci/run installs openmpi-bin; run `make test` or install it")
    out = pretrain_setup / f"launch_{launcher}"
    result = ligo(
        launcher, 2, train_args(pretrain_setup, out, "--max-steps", "6", "--micro-batch", "2", "--ds-config", "zero2")
    )
    assert json.loads((out / "config.json").read_text())["launcher"] == launcher
    assert json.loads((out / "config.json").read_text())["world_size"] == 2, result.stdout[-2000:]
    np.testing.assert_allclose(
        [x for x in losses(out)[0] if x], [x for x in losses(pretrain_reference)[0] if x], rtol=1e-4
    )
