"""options/: each option declared once, and everything generated from it: --help, --config FILE, the
checks with each command's flag names, the flat record, and the phases grow derives."""

from __future__ import annotations

import contextlib
import io
import json
import re

import pytest

from ligo_ds import ConfigError
from ligo_ds.cli import COMMANDS
from ligo_ds.data.prepare import PrepareOptions
from ligo_ds.growth.fit import FitOptions
from ligo_ds.growth.grow import GrowOptions
from ligo_ds.options import flat_options, from_values, to_flat
from ligo_ds.options.argv import shown
from ligo_ds.options.declare import MISSING
from ligo_ds.training.pretrain import PretrainOptions

# The required options of each command, with throwaway values.
REQUIRED = {
    "prepare": dict(out="d"),
    "inspect": dict(model="m.json"),
    "pretrain": dict(model="m.json", data="d", out="o", max_steps=1000),
    "fit": dict(source="s", target="t.json", data="d", out="o"),
    "grow": dict(source="s", target="t.json", data="d", out="o", max_steps=1000),
    "export": dict(run="r", out="o"),
    "eval": dict(model="m"),
    "generate": dict(model="m"),
    "report": dict(runs=["a"], out="o"),
    "plan": dict(target="t.json"),
}
PRETRAIN = REQUIRED["pretrain"]
GROW = REQUIRED["grow"]


def help_defaults(command: str) -> dict[str, str]:
    """flag -> the default its `ligo-ds COMMAND --help` line prints, from the real command line: the CLI's
    entry point in this process (the parser a process builds; test_cli.py and test_boundary.py run --help as
    processes), which spares a launch's seconds of imports per command."""
    from ligo_ds.cli import main

    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as env, contextlib.redirect_stdout(printed), pytest.raises(SystemExit) as done:
        env.setenv("COLUMNS", "1000")  # one line per option, as a wide terminal shows it
        main([command, "--help"])
    assert done.value.code == 0
    options = printed.getvalue().split("\noptions:\n", 1)[1]
    found = {}
    # One entry per option: its flags, then its help, which may begin on the next line.
    for entry in re.split(r"\n(?=  \S)", options):
        flag = entry.split()[0].rstrip(",")
        default = re.search(r"\(default ([^)]*(?:\)[^)]*)?)\)\s*$", " ".join(entry.split()))
        if default:
            found[flag] = default.group(1)
    return found


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_help_default_is_the_real_default(command):
    """The value --help prints equals the value the command runs with when the flag is left out."""
    cls = COMMANDS[command][1]
    real = to_flat(from_values(cls, REQUIRED[command]))
    printed = help_defaults(command)
    for o in flat_options(cls):
        if o.default is MISSING or o.positional or o.name in REQUIRED[command]:
            continue
        if o.shown_default is not None:  # a described default: the value is None, the help says what it means
            assert real[o.name] is None and printed[o.flag] == o.shown_default, o.name
        elif shown(o) is None:
            assert o.flag not in printed and real[o.name] in (None, False), o.name
        else:
            value = real[o.name]
            assert type(value)(printed[o.flag]) == value, (
                f"{command} {o.flag}: help {printed[o.flag]!r}, runs {value!r}"
            )
    # Commands differ where they say so: the fit evaluates more often and defaults to ZeRO-3.
    if command == "fit":
        assert (real["eval_every"], real["save_every"], real["log_every"], real["ds_config"]) == (25, 50, 5, "zero3")


def test_unknown_key_names_the_closest():
    with pytest.raises(ConfigError, match=r"run.json: unknown key 'learning_rate'.*valid keys: model, out, data"):
        from_values(PretrainOptions, {**PRETRAIN, "learning_rate": 1e-3}, "run.json")
    with pytest.raises(ConfigError, match=r"unknown key 'micro_bach' \(did you mean 'micro_batch'\?\)"):
        from_values(PretrainOptions, {**PRETRAIN, "micro_bach": 2}, "run.json")


@pytest.mark.parametrize(
    "cls, base, over, message",
    [
        (PretrainOptions, PRETRAIN, {"max_steps": None}, r"give exactly one of --max-steps \(None\) and --max-tokens"),
        (PretrainOptions, PRETRAIN, {"max_tokens": 100}, "exactly one of --max-steps"),
        (PretrainOptions, PRETRAIN, {"micro_batch": 0}, "--micro-batch 0: expected at least 1"),
        (PretrainOptions, PRETRAIN, {"lr": 0.0}, "--lr 0.0: expected more than 0"),
        (PretrainOptions, PRETRAIN, {"min_lr": 1.0}, r"0 <= --min-lr \(1.0\) <= --lr \(0.0006\)"),
        (PretrainOptions, PRETRAIN, {"dtype": "fp16"}, "--dtype 'fp16': expected one of auto, bf16, fp32"),
        (PretrainOptions, PRETRAIN, {"grad_clip": -1.0}, "--grad-clip -1.0: expected at least 0"),
        (FitOptions, REQUIRED["fit"], {"steps": -1}, "--steps -1: expected at least 0"),
        (
            FitOptions,
            REQUIRED["fit"],
            {"operator_min_lr": 0.1},
            r"--operator-min-lr \(0.1\) <= --operator-lr \(0.001\)",
        ),
        (
            FitOptions,
            REQUIRED["fit"],
            {"depth_init": "copy"},
            "--depth-init 'copy': expected one of stack, interpolate",
        ),
        # grow names the fit's length --fit-steps: the same option, the command's own flag in the message
        (GrowOptions, GROW, {"fit_steps": -1}, "--fit-steps -1: expected at least 0"),
        (GrowOptions, GROW, {"fit_micro_batch": 0}, "--fit-micro-batch 0: expected at least 1"),
        (GrowOptions, GROW, {"width_init": "net2net", "tying": "paper"}, "net2net needs --tying inverse"),
        (
            PrepareOptions,
            {"out": "d"},
            {"val_fraction": 1.5},
            "--val-fraction 1.5: expected strictly between 0.0 and 1.0",
        ),
        (PrepareOptions, {"out": "d"}, {"vocab_size": 100}, "--vocab-size 100: expected at least 257"),
    ],
)
def test_checks_name_the_commands_own_flag(cls, base, over, message):
    with pytest.raises(ConfigError, match=message):
        from_values(cls, {**base, **over})


def test_values_from_a_file_are_type_checked():
    with pytest.raises(ConfigError, match=r"run.json: max_steps='10', expected an integer"):
        from_values(PretrainOptions, {**PRETRAIN, "max_steps": "10"}, "run.json")
    with pytest.raises(ConfigError, match=r"run.json: seq_len=True, expected an integer"):
        from_values(PretrainOptions, {**PRETRAIN, "seq_len": True}, "run.json")
    with pytest.raises(ConfigError, match=r"--data is required: DATA_DIR written by `ligo-ds prepare`"):
        from_values(PretrainOptions, {k: v for k, v in PRETRAIN.items() if k != "data"})
    # JSON numbers: an int where a float is expected, an integral float where an int is (1e9 in a file)
    opts = from_values(PretrainOptions, {**PRETRAIN, "lr": 1, "max_steps": None, "max_tokens": 1e9})
    assert opts.schedule.lr == 1.0 and isinstance(opts.schedule.lr, float) and opts.schedule.max_tokens == 10**9


def test_record_round_trip():
    opts = from_values(
        GrowOptions,
        {**GROW, "fit_steps": 7, "operator_warmup": 2, "lr": 2e-3, "tying": "inverse", "fit_micro_batch": 2},
    )
    assert from_values(GrowOptions, to_flat(opts)) == opts
    assert to_flat(opts)["fit_steps"] == 7 and opts.fit.steps == 7


def test_total_steps_from_tokens():
    opts = from_values(
        PretrainOptions, {**PRETRAIN, "max_steps": None, "max_tokens": 10_001, "micro_batch": 2, "seq_len": 100}
    )
    assert opts.total_steps(world_size=2) == 26  # 400 tokens per step, rounded up


def test_grow_phases():
    opts = from_values(
        GrowOptions,
        {
            **GROW,
            "micro_batch": 16,
            "fit_micro_batch": 4,
            "fit_steps": 3,
            "operator_warmup": 2,
            "eval_every": 25,
            "operator_lr": 2e-3,
        },
    )
    fit, train = opts.fit_phase(), opts.train_phase()
    assert (fit.loop.micro_batch, train.loop.micro_batch) == (4, 16), "--fit-micro-batch applies to the fit only"
    assert (fit.cadence.eval_every, fit.cadence.save_every, fit.cadence.log_every) == (3, 3, 3), "capped at the fit"
    assert (fit.out, train.out, train.model) == ("o/fit", "o/train", "o/grown")
    assert from_values(GrowOptions, GROW).fit_phase().loop.micro_batch == 8
    # The fit's loop trains with the operator's schedule and decay, on the target's shape.
    spec = fit.run_spec(None, None)
    assert (spec.model, spec.training.schedule.lr, spec.training.schedule.max_steps, spec.optimizer.weight_decay) == (
        "t.json",
        2e-3,
        3,
        0.0,
    )
    # Each value keeps the flag that set it in grow's command line, for the fit phase's messages.
    assert (fit.loop.flag("micro_batch"), from_values(GrowOptions, GROW).fit_phase().loop.flag("micro_batch")) == (
        "--fit-micro-batch",
        "--micro-batch",
    )
    assert (fit.fit.flag("steps"), spec.training.schedule.flag("max_steps"), spec.training.schedule.flag("lr")) == (
        "--fit-steps",
        "--fit-steps",
        "--operator-lr",
    )
    assert fit.compute.flag("activation_checkpointing") == "--fit-activation-checkpointing"
    assert (train.loop.flag("micro_batch"), train.flag("model")) == ("--micro-batch", "--model")
    alone = from_values(FitOptions, REQUIRED["fit"])
    assert (alone.fit.flag("steps"), alone.loop.flag("micro_batch")) == ("--steps", "--micro-batch")


def test_each_option_is_declared_once():
    """An option that means the same thing in several commands (the micro-batch, the sequence length, the fit's
    micro-batch) is declared in one block; only options that mean something else per command share a name."""
    import dataclasses

    declared: dict[str, set[str]] = {}
    for _, cls, _ in COMMANDS.values():
        for f in dataclasses.fields(cls):
            owner = f.metadata.get("block", cls)
            for g in dataclasses.fields(owner):
                if "option" in g.metadata:
                    declared.setdefault(g.name, set()).add(owner.__qualname__)
    twice = {name: owners for name, owners in declared.items() if len(owners) > 1}
    # Each command's own output, model, source (a corpus, a checkpoint, a config), the export's dtype, and
    # generate's sampling seed beside training's.
    assert set(twice) == {"out", "model", "source", "target", "dtype", "seed"}, twice
    assert declared["micro_batch"] == {"Loop"} and declared["fit_micro_batch"] == {"FitPhase"}


def test_identity_is_derived_from_the_declarations():
    from ligo_ds.options import flat_identity, identity_of

    opts = from_values(PretrainOptions, PRETRAIN)
    kept = flat_identity(opts)
    # What a resume may change: where it writes, cadence, compute, health policy, the MFU peak, the data checks.
    for name in ("out", "eval_every", "keep_last", "activation_checkpointing", "max_bad_steps", "peak_tflops"):
        assert name not in kept, name
    assert {"lr", "micro_batch", "seed", "ds_config"} <= set(kept)
    # A block's derived entries must be given, and only those.
    assert identity_of(opts.loop, global_batch=8) == {"global_batch": 8, "grad_clip": 1.0, "seed": 1337}
    with pytest.raises(AssertionError, match="derived identity"):
        identity_of(opts.loop)


def test_config_file_and_flags(tmp_path):
    """Flags override the file; a bool option has --flag and --no-flag."""
    from ligo_ds.cli import build_parser
    from ligo_ds.options import from_args

    (tmp_path / "p.json").write_text(json.dumps({"out": "from-file", "vocab_size": 300, "force": True}))
    args = build_parser().parse_args(["prepare", "--config", str(tmp_path / "p.json"), "--vocab-size", "400"])
    opts = from_args(PrepareOptions, args)
    assert (opts.out, opts.vocab_size, opts.force) == ("from-file", 400, True)
    args = build_parser().parse_args(["prepare", "--config", str(tmp_path / "p.json"), "--no-force"])
    assert from_args(PrepareOptions, args).force is False


def test_a_command_built_in_code_needs_only_its_required_blocks():
    """Blocks whose options all have defaults default themselves; a block with a required option does not."""
    from ligo_ds.data.reading import Data
    from ligo_ds.training.schedule import Schedule

    opts = PretrainOptions(model="m.json", out="o", data=Data(data="d"), schedule=Schedule(max_steps=1000))
    assert opts == from_values(PretrainOptions, PRETRAIN)
    assert opts.loop.flag("micro_batch") == "--micro-batch", "built in code, its blocks still name their flags"
    with pytest.raises(TypeError, match="data"):
        PretrainOptions(model="m.json", out="o", schedule=Schedule(max_steps=1000))


@pytest.mark.parametrize("flag", ["--local_rank=1", "--local-rank=1"])
@pytest.mark.parametrize("before", [True, False])
def test_the_deepspeed_launchers_rank_flag_is_accepted_where_it_puts_it(flag, before):
    # deepspeed's launcher writes --local_rank=N before the subcommand when it runs `-m ligo_ds`, and
    # after it for a script; newer releases spell it with a dash. The rank itself comes from the environment.
    from ligo_ds.cli import build_parser

    rest = ["report", "somewhere"]
    argv = [flag, *rest] if before else [*rest, flag]
    args = build_parser().parse_args(argv)  # argparse exits 2 on a flag it does not know
    assert args.command == "report" and args.runs == ["somewhere"]
