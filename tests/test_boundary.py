"""The package's boundaries: its roles import one way (no cycle, no command importing another), only
ligo_ds/distributed/ imports deepspeed, importing any module of ligo_ds changes nothing in the environment,
and the commands that never train do not import deepspeed at all."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from procs import ROOT

PACKAGE = ROOT / "ligo_ds"
BOUNDARY = PACKAGE / "distributed"


def _deepspeed_imports(path: Path) -> list[int]:
    lines = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = (
            [a.name for a in node.names]
            if isinstance(node, ast.Import)
            else [node.module or ""]
            if isinstance(node, ast.ImportFrom) and node.level == 0
            else []
        )
        if any(n == "deepspeed" or n.startswith("deepspeed.") for n in names):
            lines.append(node.lineno)
    return lines


# The roles, top to bottom: a module may import its own role's modules and any role below it. Top-level
# modules count as roles of their own (cli above everything, folders below every role, errors and faults below
# everything).
LAYERS = [
    ("__main__",),
    ("cli",),
    ("commands",),
    ("api",),  # the package's public loading functions: resolve as the commands' options do (generate uses them)
    ("analysis",),
    ("growth",),
    ("training",),
    ("data",),
    ("model", "distributed"),
    ("options",),
    ("__init__",),
    ("folders",),
    ("errors", "faults"),
]
RANK = {role: i for i, roles in enumerate(LAYERS) for role in roles}


def _role(module: str) -> str:
    """ligo_ds.training.trainer -> training; ligo_ds.cli -> cli; ligo_ds -> __init__."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _ligo_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every ligo_ds module `path` imports, inside functions too, names resolved."""
    here = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    package = package.removesuffix(".__init__")
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join([*base, node.module] if node.module else base)
            if module.startswith("ligo_ds"):
                # `from . import x` may name modules: each such is its own target
                names = [f"{module}.{a.name}" for a in node.names]
                modules = [n for n in names if _is_module(n)]
                found += [(node.lineno, t) for t in (modules if modules else [module])]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("ligo_ds")]
    return found


def test_roles_import_one_way():
    """What the layout promises a newcomer: each role imports only roles below it, so there is no cycle
    between the package's folders, and a command never imports another command."""
    upward, across = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        mine = _role(".".join(path.relative_to(ROOT).with_suffix("").parts))
        for line, target in _ligo_imports(path):
            theirs = _role(target)
            where = f"{path.relative_to(ROOT)}:{line} imports {target}"
            if RANK[theirs] < RANK[mine] or (RANK[theirs] == RANK[mine] and theirs != mine):
                upward.append(where)
            command = mine == theirs == "commands" and target.count(".") == 2  # ligo_ds.commands.NAME
            if command and target.rsplit(".", 1)[1] != path.stem:
                across.append(where)
    assert upward == [], "imports against the layering"
    assert across == [], "a command imports another command"
    assert RANK["commands"] < RANK["training"] < RANK["model"], "the scan knows the roles it checks"


def test_only_the_boundary_imports_deepspeed():
    outside = {
        str(p.relative_to(ROOT)): _deepspeed_imports(p)
        for p in sorted(PACKAGE.rglob("*.py"))
        if BOUNDARY not in p.parents
    }
    assert {p: lines for p, lines in outside.items() if lines} == {}
    inside = [p for p in BOUNDARY.glob("*.py") if _deepspeed_imports(p)]
    assert len(inside) >= 3, "the scan finds the boundary's own imports (it would find others)"


def _run(code: str, *args: str) -> dict:
    """Run `code` in a fresh interpreter; it prints one JSON line last."""
    out = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if k != "PYTORCH_NVML_BASED_CUDA_CHECK"},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


IMPORT_ALL = """
import importlib, json, os, pkgutil, sys
import ligo_ds
before = dict(os.environ)
names = sorted(m.name for m in pkgutil.walk_packages(ligo_ds.__path__, "ligo_ds.") if not m.name.endswith("__main__"))
for name in names:
    importlib.import_module(name)
after = dict(os.environ)
print(json.dumps({"modules": names, "deepspeed": "deepspeed" in sys.modules,
                  "changed": sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))}))
"""


def test_importing_any_module_changes_no_environment():
    result = _run(IMPORT_ALL)
    assert "ligo_ds.distributed.launch" in result["modules"] and "ligo_ds.training.trainer" in result["modules"]
    assert result["changed"] == []
    assert result["deepspeed"] is False, "deepspeed is imported when used, not when a module is"


CLI = """
import contextlib, io, json, sys
from ligo_ds.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        rc = main(sys.argv[1:])
    except SystemExit as e:  # --help
        rc = e.code
print(json.dumps({"rc": rc, "deepspeed": "deepspeed" in sys.modules, "out": out.getvalue()[-300:]}))
"""


def _scratch_run(root: Path) -> Path:
    run = root / "scratch"
    run.mkdir()
    rows = [{"step": s, "flops": 10.0 * s, "train_seconds": s, "val_loss": 5.0 - s / 10} for s in range(4)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "config.json").write_text(json.dumps({"options": {"model": "large.json"}}))
    return run


@pytest.mark.parametrize("command", ["--help", "pretrain --help", "report", "prepare"])
def test_commands_that_do_not_train_do_not_import_deepspeed(command, tmp_path):
    args = command.split()
    if command == "report":
        args += [str(_scratch_run(tmp_path)), "--out", str(tmp_path / "report")]
    elif command == "prepare":
        (tmp_path / "corpus").mkdir()
        for i in range(20):
            (tmp_path / "corpus" / f"{i}.txt").write_text(f"print({i} * x)\n" * 20)
        args += ["--source", str(tmp_path / "corpus"), "--out", str(tmp_path / "data"), "--vocab-size", "300"]
        args += ["--val-fraction", "0.25"]  # 20 documents: a 2 % hash split could take none
    result = _run(CLI, *args)
    assert result["rc"] == 0, result["out"]
    assert result["deepspeed"] is False


@pytest.mark.multiproc
def test_joining_a_process_group_does_import_it():
    """The check above can fail: deepspeed is imported as soon as something uses it."""
    from procs import free_port

    code = (
        "import json, sys; from ligo_ds.distributed import launch; launch.init(); "
        "print(json.dumps({'deepspeed': 'deepspeed' in sys.modules}))"
    )
    env = {
        **os.environ,
        "DS_ACCELERATOR": "cpu",
        "RANK": "0",
        "WORLD_SIZE": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
        "TORCH_EXTENSIONS_DIR": str(ROOT / ".torch_extensions"),
    }
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"deepspeed": True}
