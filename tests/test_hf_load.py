"""model/hf_load.py and model/hf_save.py (and model/decoder.py through them): HF checkpoints in and out. Our
decoder against transformers, same logits in, same logits out, for every supported layout; and checkpoints
that do not fit their config."""

from __future__ import annotations

import copy
import json
import os
import pickle
import re
import shutil
import zipfile

import pytest
import safetensors.torch
import torch
import transformers
from safetensors.torch import save_file

from ligo_ds import ConfigError, ModelConfig, load_model, save_model
from ligo_ds.model.hf_load import SAFETENSORS_INDEX, SourceWeights
from ligo_ds.model.hf_save import EXPORT_MARKER

from conftest import HF_CASES, class_state_with_old_buffers, hub_base_model_state, make_hf_model

ATOL = 1e-5  # float32 end to end; observed differences are 0 to 3e-7


def _ids(vocab: int, T: int = 24, B: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, vocab, (B, T), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("case", sorted(HF_CASES))
def test_logits_match_transformers(case, hf_checkpoint):
    hf, directory = hf_checkpoint(case)
    ours = load_model(directory).eval()
    ids = _ids(ours.cfg.vocab_size)  # T=24 > the mistral case's window of 8: the window mask is exercised
    with torch.no_grad():
        torch.testing.assert_close(ours(ids), hf(ids).logits, atol=ATOL, rtol=0)


@pytest.mark.parametrize("case", sorted(HF_CASES))
def test_save_roundtrip_through_transformers(case, hf_checkpoint, tmp_path):
    _, directory = hf_checkpoint(case)
    ours = load_model(directory).eval()
    save_model(ours, tmp_path / "ours")
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "ours").eval()
    ids = _ids(ours.cfg.vocab_size, seed=2)
    with torch.no_grad():
        torch.testing.assert_close(back(ids).logits, ours(ids), atol=ATOL, rtol=0)
    assert type(back).__name__ == json.loads((tmp_path / "ours/config.json").read_text())["architectures"][0]


@pytest.mark.parametrize("case", sorted(HF_CASES))
def test_parameter_count_matches_transformers(case, tmp_path):
    cfg = ModelConfig.from_hf(HF_CASES[case])
    spec = copy.deepcopy(HF_CASES[case])  # transformers writes into the nested RoPE dicts
    hf = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(**spec))
    assert cfg.num_params() == hf.num_parameters()
    (tmp_path / "config.json").write_text(json.dumps(HF_CASES[case]))
    assert load_model(tmp_path / "config.json").num_params() == hf.num_parameters()


def test_sharded_save_loads_in_transformers_and_back(hf_checkpoint, tmp_path):
    _, directory = hf_checkpoint("llama_gqa_tied")
    ours = load_model(directory).eval()
    save_model(ours, tmp_path / "sharded", max_shard_bytes=40_000)
    index = json.loads((tmp_path / "sharded" / SAFETENSORS_INDEX).read_text())
    shards = set(index["weight_map"].values())
    assert len(shards) > 2 and all((tmp_path / "sharded" / s).is_file() for s in shards)
    ids = _ids(ours.cfg.vocab_size)
    with torch.no_grad():
        back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "sharded").eval()
        torch.testing.assert_close(back(ids).logits, ours(ids), atol=ATOL, rtol=0)
        torch.testing.assert_close(load_model(tmp_path / "sharded")(ids), ours(ids), atol=0, rtol=0)


def test_resave_replaces_stale_shards(hf_checkpoint, tmp_path):
    _, directory = hf_checkpoint("gpt2")
    ours = load_model(directory)
    save_model(ours, tmp_path / "out", max_shard_bytes=40_000)
    save_model(ours, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [EXPORT_MARKER, "config.json", "model.safetensors"]


def test_a_write_replaces_only_a_new_empty_or_own_folder(hf_checkpoint, tmp_path):
    """The writer renames its finished directory over `out_dir`; a folder holding anything it did not write
    (a user's notes, a run) is refused before a byte is written, and keeps every file."""
    _, directory = hf_checkpoint("gpt2")
    ours = load_model(directory)
    tmp_path = tmp_path / "area"  # the fixture's checkpoint lives beside it
    tmp_path.mkdir()
    (tmp_path / "empty").mkdir()
    save_model(ours, tmp_path / "empty")  # an empty folder is taken
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me\n")
    (tmp_path / "a_file").write_text("keep me too\n")
    for out, message in (
        (tmp_path / "mine", "is not empty \\(notes.txt\\) and is not a checkpoint ligo_ds wrote"),
        (tmp_path / "mine" / ".." / "mine", "is not empty \\(notes.txt\\)"),
        (tmp_path / "a_file", "a_file' is not a folder; expected a new or empty folder"),
    ):
        with pytest.raises(ConfigError, match=message):
            save_model(ours, out)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me\n"
    assert (tmp_path / "a_file").read_text() == "keep me too\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "empty", "mine"], "no temporary is left"
    # Take the marker away and the folder is the user's again: it is refused, not replaced.
    (tmp_path / "empty" / EXPORT_MARKER).unlink()
    with pytest.raises(ConfigError, match="is not a checkpoint ligo_ds wrote"):
        save_model(ours, tmp_path / "empty")


def test_the_writer_takes_tensors_in_any_order_and_refuses_an_incomplete_stream(hf_checkpoint, tmp_path):
    """write_checkpoint lays the files out from the config, so it holds one tensor at a time: the stream's
    order does not matter (a ZeRO-3 gather and the operator's blocks come in other orders), and a missing,
    repeated or misshapen tensor is an error, not a file with zeros in it."""
    from ligo_ds.model.hf_save import write_checkpoint

    _, directory = hf_checkpoint("llama_gqa_tied")
    ours = load_model(directory)
    state = list(ours.state_dict().items())
    for name, items in (("forward", state), ("backward", state[::-1])):
        write_checkpoint(ours.cfg, items, tmp_path / name, max_shard_bytes=40_000)
    for shard in json.loads((tmp_path / "forward" / SAFETENSORS_INDEX).read_text())["weight_map"].values():
        assert (tmp_path / "forward" / shard).read_bytes() == (tmp_path / "backward" / shard).read_bytes()
    torch.testing.assert_close(load_model(tmp_path / "backward").state_dict(), ours.state_dict(), atol=0, rtol=0)
    for bad, message in (
        (state[:3] + state[4:], "tensors never came"),
        ([*state, state[3]], "is not one of the model's"),
        ([(n, t[:1]) if i == 3 else (n, t) for i, (n, t) in enumerate(state)], "is not one of the model's"),
    ):
        with pytest.raises(ValueError, match=message):
            write_checkpoint(ours.cfg, bad, tmp_path / "bad")
        assert not list(tmp_path.glob("*bad*")), "nothing is left behind"


# ---- every file layout transformers loads --------------------------------------------------------------


def _weights(model) -> dict[str, torch.Tensor]:
    """The class's own tensor names and weights, the tied head left out as save_pretrained does."""
    tied = model.config.tie_word_embeddings
    return {k: v.contiguous() for k, v in model.state_dict().items() if not (tied and k == "lm_head.weight")}


def _write_bin_shards(state: dict, directory, shards: int = 2) -> None:
    names = sorted(state)
    weight_map = {}
    for i in range(shards):
        file = f"pytorch_model-{i + 1:05d}-of-{shards:05d}.bin"
        part = {k: state[k] for k in names[i::shards]}
        torch.save(part, directory / file)
        weight_map.update(dict.fromkeys(part, file))
    (directory / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


LAYOUTS = {
    "safetensors": lambda m, d: m.save_pretrained(d),
    "safetensors_sharded": lambda m, d: m.save_pretrained(d, max_shard_size="40KB"),
    "bin": lambda m, d: torch.save(_weights(m), d / "pytorch_model.bin"),
    # torch < 1.6's format, not a zip archive: transformers still reads it (weights_only), and so do we
    "bin_legacy": lambda m, d: torch.save(_weights(m), d / "pytorch_model.bin", _use_new_zipfile_serialization=False),
    "bin_sharded": lambda m, d: _write_bin_shards(_weights(m), d),
    "hub_base_model_safetensors": lambda m, d: save_file(hub_base_model_state(m), str(d / "model.safetensors")),
    "hub_base_model_bin": lambda m, d: torch.save(hub_base_model_state(m), d / "pytorch_model.bin"),
    "safetensors_old_buffers": lambda m, d: save_file(class_state_with_old_buffers(m), str(d / "model.safetensors")),
}


# The base-model layouts (no class prefix, no head) are GPT-2-era Hub files: only tied models can be served so.
_LAYOUT_CASES = [
    (case, layout)
    for case in ("gpt2", "llama_gqa_tied", "qwen2_gqa", "qwen3_headdim_qknorm", "olmo2", "gpt_neox", "gemma3")
    for layout in sorted(LAYOUTS)
    if HF_CASES[case].get("tie_word_embeddings", case == "gpt2") or not layout.startswith("hub_base_model")
]


@pytest.mark.parametrize(("case", "layout"), _LAYOUT_CASES)
def test_every_layout_transformers_loads(case, layout, tmp_path):
    model = make_hf_model(case)
    model.config.save_pretrained(tmp_path)
    LAYOUTS[layout](model, tmp_path)
    if layout == "safetensors_sharded":
        assert len(set(json.loads((tmp_path / SAFETENSORS_INDEX).read_text())["weight_map"].values())) > 2
    ids = _ids(96)
    with torch.no_grad():
        theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()(ids).logits
        torch.testing.assert_close(theirs, model(ids).logits, atol=0, rtol=0)  # the file is complete
        torch.testing.assert_close(load_model(tmp_path).eval()(ids), theirs, atol=ATOL, rtol=0)
    # `pretrain --model DIR` (and grow's training phase) reads the same files a tensor at a time
    from ligo_ds.training.pretrain import hf_weight_source

    source = hf_weight_source(tmp_path)
    for name, tensor in load_model(tmp_path).state_dict().items():
        torch.testing.assert_close(source(name, tensor.shape), tensor, atol=0, rtol=0)


def test_base_model_checkpoint_of_an_untied_model_lacks_its_head(tmp_path):
    model = make_hf_model("gpt2_untied_gelu")
    model.config.save_pretrained(tmp_path)
    save_file(hub_base_model_state(model), str(tmp_path / "model.safetensors"))
    with pytest.raises(ConfigError, match="a base-model checkpoint: names without 'transformer.'.* 'lm_head.weight'"):
        load_model(tmp_path)


def test_unused_weight_is_not_excused_by_a_buffer_pattern(tmp_path):
    # transformers ignores keys matching "attn.bias" anywhere; a stray c_attn.bias is a weight, and reported
    model = make_hf_model("gpt2")
    model.config.save_pretrained(tmp_path)
    state = hub_base_model_state(model)
    state["h.7.attn.c_attn.bias"] = torch.zeros(192)
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(ConfigError, match=r"1 tensor\(s\) its config does not describe: h.7.attn.c_attn.bias"):
        load_model(tmp_path)


class _Exploit:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['LIGO_TEST_MARKER']}",))


def test_malicious_pickle_is_refused(hf_checkpoint, tmp_path, monkeypatch):
    _, directory = hf_checkpoint("gpt2")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text((directory / "config.json").read_text())
    marker = tmp_path / "pwned"
    monkeypatch.setenv("LIGO_TEST_MARKER", str(marker))
    with open(bad / "pytorch_model.bin", "wb") as f:
        pickle.dump({"transformer.wte.weight": _Exploit()}, f)
    with pytest.raises(ConfigError, match="refusing to load"):
        load_model(bad)
    assert not marker.exists()


def test_random_init_from_config_file(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(HF_CASES["llama_gqa_tied"]))
    model = load_model(path)
    assert model.lm_head.weight is model.tok_emb.weight
    assert model(_ids(96)).shape == (2, 24, 96)


# ---- checkpoints that do not fit their config ---------------------------------------------------------


def test_checkpoint_shape_mismatch_names_tensor_and_shapes(hf_checkpoint):
    _, directory = hf_checkpoint("llama")
    config = json.loads((directory / "config.json").read_text())
    config["intermediate_size"] = 128
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        ConfigError,
        match=r"'model.layers.0.mlp.gate_proj.weight' has shape \(96, 64\), "
        r"but the config expects \(128, 64\)",
    ):
        load_model(directory)


def test_checkpoint_with_more_layers_than_config(hf_checkpoint):
    _, directory = hf_checkpoint("gpt2")
    config = json.loads((directory / "config.json").read_text())
    config["n_layer"] = 1
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=r"tensor\(s\) its config does not describe: transformer.h.1"):
        load_model(directory)


def test_checkpoint_missing_tensor(hf_checkpoint):
    _, directory = hf_checkpoint("gpt2")
    config = json.loads((directory / "config.json").read_text())
    config["n_layer"] = 3
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="lacks tensor 'transformer.h.2.ln_1.weight'"):
        load_model(directory)


def test_truncated_safetensors(hf_checkpoint):
    _, directory = hf_checkpoint("gpt2")
    path = directory / "model.safetensors"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ConfigError, match="model.safetensors"):
        load_model(directory)


def test_directory_without_weights(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(HF_CASES["gpt2"]))
    with pytest.raises(ConfigError, match="no weights in .*pass a config.json file for a random init"):
        load_model(tmp_path)


# ---- hostile and careless files (issue 44) -------------------------------------------------------------


def test_a_legacy_bin_loads_the_same_tensors_as_a_zip_one(hf_checkpoint, tmp_path):
    model, directory = hf_checkpoint("llama")
    for name, zip_format in (("zip", True), ("legacy", False)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text((directory / "config.json").read_text())
        torch.save(_weights(model), tmp_path / name / "pytorch_model.bin", _use_new_zipfile_serialization=zip_format)
    assert zipfile.is_zipfile(tmp_path / "zip" / "pytorch_model.bin")
    assert not zipfile.is_zipfile(tmp_path / "legacy" / "pytorch_model.bin")
    legacy, new = load_model(tmp_path / "legacy").state_dict(), load_model(tmp_path / "zip").state_dict()
    torch.testing.assert_close(legacy, new, atol=0, rtol=0)


def test_a_legacy_pickle_that_runs_code_is_refused_in_one_line(tmp_path, monkeypatch):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps(HF_CASES["gpt2"]))
    monkeypatch.setenv("LIGO_TEST_MARKER", str(tmp_path / "pwned"))
    torch.save({"transformer.wte.weight": _Exploit()}, bad / "pytorch_model.bin", _use_new_zipfile_serialization=False)
    with pytest.raises(ConfigError, match="holds pickled objects besides tensors") as e:
        load_model(bad)
    assert "\n" not in str(e.value) and "weights_only=False" not in str(e.value)
    assert not (tmp_path / "pwned").exists()


def _indexed(tmp_path, hf_checkpoint, shard: str | None = None, text: str | None = None):
    """A copy of a checkpoint whose index maps every tensor to `shard` (or holds `text`)."""
    _, directory = hf_checkpoint("llama")
    model = tmp_path / "folder"
    shutil.copytree(directory, model)
    keys = list(safetensors.torch.load_file(model / "model.safetensors"))
    text = text if text is not None else json.dumps({"weight_map": dict.fromkeys(keys, shard)})
    (model / SAFETENSORS_INDEX).write_text(text)
    return model


@pytest.mark.parametrize(
    "text, message",
    [
        ("{not json", "is not valid JSON"),
        ("[]", "must hold a JSON object, not list"),
        ('{"metadata": {}}', "holds no weight_map"),
        ('{"weight_map": {"a": 1}}', "holds no weight_map; .*maps each tensor name to its shard's file name"),
    ],
)
def test_an_index_that_is_no_index(tmp_path, hf_checkpoint, text, message):
    with pytest.raises(ConfigError, match=f"{SAFETENSORS_INDEX}' {message}"):
        load_model(_indexed(tmp_path, hf_checkpoint, text=text))


@pytest.mark.parametrize(
    "shard", ["../../../etc/passwd", "/etc/passwd", "../other/model.safetensors", "sub/model.safetensors", "..", ""]
)
def test_index_entries_are_file_names_inside_the_folder(tmp_path, hf_checkpoint, shard):
    with pytest.raises(ConfigError, match=f"lists the file '{re.escape(shard)}': expected a plain file name inside"):
        load_model(_indexed(tmp_path, hf_checkpoint, shard))


def test_a_shard_may_link_inside_its_folder_or_a_hub_snapshot_into_its_blobs(tmp_path, hf_checkpoint):
    model = _indexed(tmp_path, hf_checkpoint, "shard.safetensors")
    (model / "model.safetensors").rename(model / "real.safetensors")
    (model / "shard.safetensors").symlink_to("real.safetensors")
    expected = load_model(model).state_dict()
    # huggingface_hub's cache: snapshots/<commit>/<file> -> ../../blobs/<hash>
    repo = tmp_path / "models--org--name"
    snapshot = repo / "snapshots" / "0123abc"
    (repo / "blobs").mkdir(parents=True)
    shutil.copytree(model, snapshot, symlinks=True)
    (snapshot / "real.safetensors").rename(repo / "blobs" / "f00d")
    (snapshot / "shard.safetensors").unlink()
    (snapshot / "shard.safetensors").symlink_to("../../blobs/f00d")
    torch.testing.assert_close(load_model(snapshot).state_dict(), expected, atol=0, rtol=0)
    # the same link from a folder that is not a snapshot reads outside it: refused
    (model / "shard.safetensors").unlink()
    (model / "shard.safetensors").symlink_to(repo / "blobs" / "f00d")
    with pytest.raises(ConfigError, match="shard.safetensors' .* is a symbolic link out of its folder, to '.*f00d'"):
        load_model(model)


def test_an_integer_tensor_is_not_a_weight(hf_checkpoint):
    _, directory = hf_checkpoint("llama")
    state = safetensors.torch.load_file(directory / "model.safetensors")
    state["model.norm.weight"] = state["model.norm.weight"].to(torch.int64)
    save_file(state, str(directory / "model.safetensors"))
    with pytest.raises(ConfigError, match="tensor 'model.norm.weight' is stored as I64; expected a floating-point"):
        load_model(directory)
    torch.save(state, directory / "pytorch_model.bin")
    (directory / "model.safetensors").unlink()
    with pytest.raises(ConfigError, match="tensor 'model.norm.weight' is stored as int64; expected a floating-point"):
        load_model(directory)


@pytest.mark.parametrize("value, word", [(float("nan"), "NaN"), (float("-inf"), "inf")])
def test_non_finite_weights_are_named(hf_checkpoint, value, word):
    _, directory = hf_checkpoint("llama")
    SourceWeights(directory).check_finite()
    state = safetensors.torch.load_file(directory / "model.safetensors")
    state["model.layers.1.self_attn.k_proj.weight"][2, 3] = value
    save_file(state, str(directory / "model.safetensors"))
    with pytest.raises(ConfigError, match=f"tensor 'model.layers.1.self_attn.k_proj.weight' holds {word} values"):
        SourceWeights(directory).check_finite()


def test_a_path_that_is_not_a_file_or_folder():
    with pytest.raises(ConfigError, match="model path '/dev/zero' is not a regular file or folder"):
        load_model("/dev/zero")


def test_exports_drop_the_keys_that_run_a_sources_code(tmp_path):
    code = {"auto_map": {"AutoModelForCausalLM": "modeling_x.X"}, "trust_remote_code": True}
    (tmp_path / "config.json").write_text(json.dumps({**HF_CASES["llama"], **code}))
    model = load_model(tmp_path / "config.json")
    assert model.cfg.hf_config["auto_map"]  # kept as read: only what is written drops it
    save_model(model, tmp_path / "out")
    written = json.loads((tmp_path / "out" / "config.json").read_text())
    assert not set(code) & set(written) and written["architectures"] == ["LlamaForCausalLM"]
