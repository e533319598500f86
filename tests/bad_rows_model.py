"""Bad-input rows for models, their configs and weights: (name, setup(world, tmp) -> argv, the one error line
it must print, as a regular expression). test_bad_input.py runs them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from badinput import TINY, fit, write_json
from conftest import cli, make_tokenizer

INDEX = "model.safetensors.index.json"


def _copy(w, tmp, name: str) -> Path:
    """A copy of the world's small model, to damage."""
    return Path(shutil.copytree(w / "small", tmp / name))


def _with_index(w, tmp, text: str) -> list[str]:
    model = _copy(w, tmp, "indexed")
    (model / INDEX).write_text(text)
    return ["inspect", "--model", str(model)]


def _mapped_to(w, tmp, shard: str) -> list[str]:
    keys = list(load_file(w / "small" / "model.safetensors"))
    return _with_index(w, tmp, json.dumps({"weight_map": dict.fromkeys(keys, shard)}))


def index_not_json(w, tmp):
    return _with_index(w, tmp, "{not json")


def index_a_list(w, tmp):
    return _with_index(w, tmp, json.dumps(["model.safetensors"]))


def index_without_weight_map(w, tmp):
    return _with_index(w, tmp, json.dumps({"metadata": {"total_size": 1}}))


def index_climbs_out(w, tmp):
    return _mapped_to(w, tmp, "../../../etc/passwd")


def index_absolute(w, tmp):
    return _mapped_to(w, tmp, "/etc/passwd")


def index_into_another_model(w, tmp):
    _copy(w, tmp, "other_model")
    return _mapped_to(w, tmp, "../other_model/model.safetensors")


def index_link_out_of_the_folder(w, tmp):
    argv = _mapped_to(w, tmp, "shard.safetensors")
    (tmp / "indexed" / "shard.safetensors").symlink_to(w / "small" / "model.safetensors")
    return argv


def _config(tmp, **update) -> list[str]:
    return ["inspect", "--model", str(write_json(tmp / "config.json", {**TINY, **update}))]


def bool_size(w, tmp):
    return _config(tmp, hidden_size=True)


def nan_epsilon(w, tmp):
    return _config(tmp, rms_norm_eps="nan")


def negative_size(w, tmp):
    return _config(tmp, intermediate_size=-48)


def billion_wide(w, tmp):
    return _config(tmp, hidden_size=10**9)


def trillion_layers_planned(w, tmp):
    deep = write_json(tmp / "deep.json", {**TINY, "num_hidden_layers": 10**12})
    return cli("plan", source=w / "tiny.json", target=deep)


def more_than_the_machine_holds(w, tmp):
    # 859e9 parameters: under the size bound, but 3.2 TB in float32
    return _config(tmp, hidden_size=2**14, intermediate_size=2**16, num_hidden_layers=200)


def source_a_device(w, tmp):
    return cli("fit", source="/dev/zero", target=w / "tiny.json", data=w / "data", out=tmp / "f", steps=0)


def _with_tensor(w, tmp, name: str, change) -> Path:
    model = _copy(w, tmp, "changed")
    state = load_file(model / "model.safetensors")
    state[name] = change(state[name])
    save_file(state, str(model / "model.safetensors"), metadata={"format": "pt"})
    return model


def integer_weight(w, tmp):
    model = _with_tensor(w, tmp, "model.norm.weight", lambda t: t.to(torch.int64))
    return ["inspect", "--model", str(model)]


def _nan_source(w, tmp) -> Path:
    return _with_tensor(
        w, tmp, "model.layers.1.mlp.up_proj.weight", lambda t: t.index_fill(1, torch.tensor([3]), torch.nan)
    )


def _deeper(tmp) -> Path:
    return write_json(tmp / "t.json", {**TINY, "num_hidden_layers": 3})


def nan_source_fit(w, tmp):
    argv = fit(w, _deeper(tmp), tmp / "f")
    argv[argv.index("--source") + 1] = str(_nan_source(w, tmp))
    return argv


def inf_source_grow(w, tmp):
    source = _with_tensor(w, tmp, "model.embed_tokens.weight", lambda t: t.index_fill(0, torch.tensor([7]), torch.inf))
    return cli(
        "grow",
        source=source,
        target=_deeper(tmp),
        data=w / "data",
        out=tmp / "g",
        fit_steps=0,
        max_steps=2,
        warmup_steps=1,
        seq_len=16,
        micro_batch=2,
        ds_config="zero2",
    )


def tokenizer_with_its_own_code(w, tmp):
    tok = make_tokenizer(tmp / "custom", "gpt2")
    config = json.loads((tok / "tokenizer_config.json").read_text())
    config.pop("tokenizer_class", None)
    config["auto_map"] = {"AutoTokenizer": ["tokenization_custom.CustomTokenizer", None]}
    write_json(tok / "tokenizer_config.json", config)
    return ["prepare", "--source", str(w / "corpus"), "--tokenizer", str(tok), "--out", str(tmp / "d")]


_SHARD = "expected a plain file name inside .*indexed'"

ROWS = [
    ("index not JSON", index_not_json, f"model index '.*indexed/{INDEX}' is not valid JSON"),
    ("index a JSON list", index_a_list, f"model index '.*indexed/{INDEX}' must hold a JSON object, not list"),
    ("index without weight_map", index_without_weight_map, f"{INDEX}' holds no weight_map"),
    ("index entry ../../../etc/passwd", index_climbs_out, f"{INDEX}' lists the file '../../../etc/passwd': {_SHARD}"),
    ("index entry an absolute path", index_absolute, f"{INDEX}' lists the file '/etc/passwd': {_SHARD}"),
    (
        "index entry into another model",
        index_into_another_model,
        f"{INDEX}' lists the file '../other_model/model.safetensors': {_SHARD}",
    ),
    (
        "index entry a link out of the folder",
        index_link_out_of_the_folder,
        "shard.safetensors' .* is a symbolic link out of its folder, to '.*small/model.safetensors'",
    ),
    ("a bool for a size", bool_size, "llama config: hidden_size=true, expected a positive integer"),
    ("a string nan for an epsilon", nan_epsilon, 'llama config: rms_norm_eps="nan", expected a finite number above 0'),
    ("a negative size", negative_size, "llama config: intermediate_size=-48, expected a positive integer"),
    (
        "a billion-wide model",
        billion_wide,
        "describes 8,000,000,\\d{3},\\d{3},\\d{3},\\d{3} parameters .*more than the 10,000,000,000,000 ligo_ds accepts",
    ),
    (
        "a trillion layers, planned",
        trillion_layers_planned,
        "llama config: 1,000,000,000,000 layers, more than the 10,000 ligo_ds accepts",
    ),
    (
        "a model larger than the machine's memory",
        more_than_the_machine_holds,
        "of 859,\\d{3},\\d{3},\\d{3} parameters needs 3,200.\\d GiB in float32, more than this machine's [\\d,.]+ GiB",
    ),
    ("--source a device", source_a_device, "'/dev/zero' is not a regular file or folder"),
    (
        "an integer tensor for a weight",
        integer_weight,
        "changed': tensor 'model.norm.weight' is stored as I64; expected a floating-point weight",
    ),
    (
        "NaN in the source of a fit",
        nan_source_fit,
        "changed': tensor 'model.layers.1.mlp.up_proj.weight' holds NaN values; expected finite weights",
    ),
    (
        "inf in the source of a grow",
        inf_source_grow,
        "changed': tensor 'model.embed_tokens.weight' holds inf values; expected finite weights",
    ),
    (
        "a tokenizer with its own code",
        tokenizer_with_its_own_code,
        "custom' needs its own Python code to load \\(auto_map in tokenizer_config.json\\); ligo-ds does not run "
        "a model's or tokenizer's own code",
    ),
]


def fit_from_a_config_file(w, tmp):
    argv = fit(w, write_json(tmp / "t.json", {**TINY, "num_hidden_layers": 3}), tmp / "f")
    argv[argv.index("--source") + 1] = str(w / "tiny.json")
    return argv


ROWS += [
    (
        "fit --source CONFIG.json",
        fit_from_a_config_file,
        "--source '.*tiny.json' is a config file; expected a trained model's checkpoint directory",
    ),
]
