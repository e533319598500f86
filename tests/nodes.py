"""Starting jobs across the nodes of tests/multinode/cluster.sh (network namespaces node1..N on one
machine): every launcher, started as a user starts it on a cluster, from inside a node."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from procs import ROOT, free_port, job_env, kill_tree

CLUSTER = ROOT / "tests" / "multinode" / "cluster.sh"
DIR = Path(os.environ.get("MULTINODE_DIR", ROOT / ".multinode"))
SLURM_CONF = DIR / "slurm" / "slurm.conf"
PREFIX = os.environ.get("MULTINODE_PREFIX", "ligo")
# Every node's interface on the private subnet: gloo must bind there, not to lo, to reach the other nodes.
IFNAME = "eth0"


def node_count() -> int:
    """The number of nodes of the running cluster; skips (fails under CI) when there is none."""
    try:
        n = int((DIR / "nodes").read_text())
        ok = subprocess.run([CLUSTER, "on", "node1", "true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, ValueError):
        n, ok = 0, False
    if not ok:
        message = f"no multi-node cluster under {DIR}; `make test` starts one with {CLUSTER} start 3"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return n


def require_slurm() -> None:
    """Skips (fails under CI) when the cluster runs no Slurm (slurm-wlm or munge missing at its start)."""
    if SLURM_CONF.is_file() and slurm("sinfo", "-h", check=False).returncode == 0:
        return
    message = f"the multi-node cluster runs no Slurm ({SLURM_CONF}): apt-get install slurm-wlm munge, restart it"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def on(node: str, argv: list[str]) -> list[str]:
    return [str(CLUSTER), "on", node, *map(str, argv)]


def env(**extra: str) -> dict[str, str]:
    return job_env(GLOO_SOCKET_IFNAME=IFNAME, SLURM_CONF=str(SLURM_CONF), **extra)


def start(argv: list[str], environ: dict[str, str] | None = None, log: Path | None = None) -> subprocess.Popen:
    out = open(log, "a") if log else None  # noqa: SIM115  # closed below, once the child holds it
    try:
        return subprocess.Popen(
            argv,
            env=environ or env(),
            cwd=ROOT,
            stdout=out or subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        if out:
            out.close()


def torchrun(nodes: int, args: list[str], **extra: str) -> list[list[str]]:
    """One torchrun per node, one rank each, meeting through a c10d rendezvous on node1."""
    port = free_port()
    return [
        on(
            f"node{k}",
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                f"--nnodes={nodes}",
                "--nproc_per_node=1",
                "--rdzv_backend=c10d",
                f"--rdzv_endpoint=node1:{port}",
                f"--rdzv_id=test{port}",
                "-m",
                "ligo_ds",
                *args,
            ],
        )
        for k in range(1, nodes + 1)
    ]


# What the ranks that ssh starts need; ssh passes no environment, so each launcher is told (mpirun -x,
# the deepspeed runner's DS_ENV_FILE).
FORWARDED = ("DS_ACCELERATOR", "GLOO_SOCKET_IFNAME", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TORCH_EXTENSIONS_DIR")


def mpirun(nodes: int, args: list[str], environ: dict[str, str]) -> list[list[str]]:
    """mpirun on node1 with -H: Open MPI starts node2's rank over ssh; -x forwards the variables."""
    forward = [x for k in (*FORWARDED, "OMP_NUM_THREADS", *extra_keys(environ)) for x in ("-x", k)]
    hosts = ",".join(f"node{k}:1" for k in range(1, nodes + 1))
    return [
        on(
            "node1",
            [
                "mpirun",
                "--allow-run-as-root",
                "-H",
                hosts,
                "--bind-to",
                "none",
                *forward,
                "-x",
                f"MASTER_PORT={free_port()}",
                sys.executable,
                "-m",
                "ligo_ds",
                *args,
            ],
        )
    ]


def extra_keys(environ: dict[str, str]) -> list[str]:
    return [k for k in environ if k.startswith("LIGO_DS_")]


def launch(launcher: str, nodes: int, args: list[str], workdir: Path, node_env: dict | None = None, **extra: str):
    """Start `ligo-ds ARGS` on `nodes` nodes, one rank each; returns the launcher processes. `node_env`
    ({"node2": {...}}) adds variables on one node only (torchrun, which starts one launcher per node)."""
    workdir.mkdir(parents=True, exist_ok=True)
    environ = env(**extra)
    if launcher == "torchrun":
        argvs = torchrun(nodes, args)
        envs = [{**environ, **(node_env or {}).get(f"node{k}", {})} for k in range(1, nodes + 1)]
        return [start(a, e, workdir / f"launcher{i}.log") for i, (a, e) in enumerate(zip(argvs, envs))]
    elif launcher == "mpirun":
        if shutil.which("mpirun") is None:
            pytest.fail("mpirun is missing: `make system-deps` installs openmpi-bin")
        argvs = mpirun(nodes, args, environ)
    else:
        raise ValueError(f"launcher {launcher!r}: expected torchrun or mpirun (deepspeed: through Slurm)")
    return [start(a, environ, workdir / f"launcher{i}.log") for i, a in enumerate(argvs)]


def wait_all(procs: list[subprocess.Popen], workdir: Path, timeout: float = 300) -> list[int]:
    deadline = time.time() + timeout
    try:
        for p in procs:
            p.wait(timeout=max(1, deadline - time.time()))
    except subprocess.TimeoutExpired:
        raise AssertionError(f"timed out after {timeout} s\n{logs(workdir)[-4000:]}") from None
    finally:
        for p in procs:
            kill_tree(p.pid)
        kill_jobs()
    return [p.returncode for p in procs]


def run(launcher: str, nodes: int, args: list[str], workdir: Path, timeout: float = 300, **extra: str) -> str:
    procs = launch(launcher, nodes, args, workdir, **extra)
    codes = wait_all(procs, workdir, timeout)
    if any(codes):
        raise AssertionError(f"{launcher} on {nodes} nodes: exit {codes}\n{logs(workdir)[-6000:]}")
    return logs(workdir)


def logs(workdir: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in sorted(workdir.glob("launcher*.log")))


def node_pids(node: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", f"{PREFIX}-{node}"], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


JOB_MARKERS = ("ligo_ds", "torch.distributed.run", "deepspeed.launcher", "orted", "pdsh")


def job_procs(node: str) -> list[psutil.Process]:
    """The job processes in a node (ranks, launchers, MPI daemons), not the node's sshd or slurmd."""
    found = []
    for pid in node_pids(node):
        try:
            p = psutil.Process(pid)
            if any(m in " ".join(p.cmdline()) for m in JOB_MARKERS):
                found.append(p)
        except psutil.NoSuchProcess:
            pass
    return found


def kill_jobs() -> None:
    """SIGKILL what a job left in any node (ranks that ssh or srun started are not our children)."""
    n = int((DIR / "nodes").read_text()) if (DIR / "nodes").is_file() else 0
    procs = [p for k in range(1, n + 1) for p in job_procs(f"node{k}")]
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=10)


def slurm(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    """A Slurm client command, run where users run it: on a node (the head is reachable only from there)."""
    return subprocess.run(on("node1", list(argv)), env=env(), capture_output=True, text=True, timeout=60, check=check)
