"""model/hub.py through the CLI: Hub ids, ORG/NAME[@REVISION], resolved offline from a cache laid out as
huggingface_hub lays it out (blobs, snapshots/<commit> of links, refs/<branch or tag>), built here."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest
from safetensors.torch import save_file

from conftest import cli, hub_base_model_state, make_hf_model, make_tokenizer

MAIN, TAGGED = "a" * 40, "b" * 40


def _add_snapshot(repo_dir, commit: str, files: dict[str, bytes]) -> None:
    for name, content in files.items():
        blob = repo_dir / "blobs" / hashlib.sha256(content).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(content)
        link = repo_dir / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory):
    """`org/tiny-gpt2`: a GPT-2 as the Hub serves it (base-model names, no head) with its tokenizer, at
    main, and an older commit tagged v1.0 that another model's weights sit at."""
    root = tmp_path_factory.mktemp("hub")
    staging = make_tokenizer(root / "staging", "gpt2")
    spec = dict(model_type="gpt2", n_embd=32, n_layer=2, n_head=4, n_positions=64, vocab_size=320)
    make_hf_model(spec).config.save_pretrained(staging)
    save_file(hub_base_model_state(make_hf_model(spec, seed=1)), str(staging / "model.safetensors"))
    files = {p.name: p.read_bytes() for p in staging.iterdir()}
    repo = root / "cache" / "models--org--tiny-gpt2"
    _add_snapshot(repo, MAIN, files)
    save_file(hub_base_model_state(make_hf_model(spec, seed=2)), str(staging / "model.safetensors"))
    _add_snapshot(repo, TAGGED, {**files, "model.safetensors": (staging / "model.safetensors").read_bytes()})
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(MAIN)
    (repo / "refs" / "v1.0").write_text(TAGGED)
    return root


def ligo_ds(hub_cache, *argv) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_CACHE": str(hub_cache / "cache"), "HF_HUB_OFFLINE": "1", "DS_ACCELERATOR": "cpu"}
    argv = [sys.executable, "-m", "ligo_ds", *map(str, argv)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)


@pytest.fixture(scope="module")
def hub_data(hub_cache):
    """A corpus prepared with the Hub model's own tokenizer, named by its id."""
    corpus = hub_cache / "corpus"
    corpus.mkdir()
    for i in range(30):
        (corpus / f"{i}.txt").write_text(f"def f{i}(x):\n    return x * {i}\n" * 4)
    data = hub_cache / "data"
    prepared = ligo_ds(hub_cache, *cli("prepare", source=corpus, out=data, tokenizer="org/tiny-gpt2"))
    assert prepared.returncode == 0, prepared.stderr[-2000:]
    return data


def test_hub_ids_resolve_offline_to_the_revision_asked(hub_cache, hub_data):
    assert json.loads((hub_data / "meta.json").read_text())["eos_token"] == "<|endoftext|>"
    runs = {
        spec: ligo_ds(hub_cache, "inspect", "--model", spec, "--data", hub_data, "--seq-len", "32")
        for spec in ("org/tiny-gpt2", "org/tiny-gpt2@main", "org/tiny-gpt2@v1.0", f"org/tiny-gpt2@{TAGGED}")
    }
    for spec, run in runs.items():
        assert run.returncode == 0, (spec, run.stderr[-2000:])
    assert "gpt2 (gpt2 family): 2 layers, hidden 32" in runs["org/tiny-gpt2"].stdout
    # The same validation tokens through each: main's weights, and v1.0's (other weights) by tag or commit.
    assert runs["org/tiny-gpt2"].stdout == runs["org/tiny-gpt2@main"].stdout
    assert runs["org/tiny-gpt2@v1.0"].stdout == runs[f"org/tiny-gpt2@{TAGGED}"].stdout
    assert runs["org/tiny-gpt2"].stdout != runs["org/tiny-gpt2@v1.0"].stdout


def test_a_hub_source_is_recorded_with_its_commit(hub_cache, hub_data, tmp_path):
    target = tmp_path / "large.json"
    target.write_text(
        json.dumps(dict(model_type="gpt2", n_embd=64, n_layer=3, n_head=8, n_positions=64, vocab_size=320))
    )
    run = tmp_path / "fit"
    argv = cli("fit", source="org/tiny-gpt2@v1.0", target=target, data=hub_data, out=run, steps=0)
    grown = ligo_ds(hub_cache, *argv)
    assert grown.returncode == 0, grown.stderr[-2000:]
    record = json.loads((run / "config.json").read_text())
    assert record["hub"]["--source"] == {
        "id": "org/tiny-gpt2",
        "revision": "v1.0",
        "commit": TAGGED,
        "path": str(hub_cache / "cache" / "models--org--tiny-gpt2" / "snapshots" / TAGGED),
    }


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["inspect", "--model", "org/absent"],
            r"--model org/absent: no such local path, and Hub model 'org/absent' is not in the local Hugging Face "
            r"cache \(.*cache\); HF_HUB_OFFLINE=1 forbids downloading it",
        ),
        (
            ["inspect", "--model", "org/tiny-gpt2@v9"],
            "--model org/tiny-gpt2@v9: no such local path, and revision 'v9' of Hub model 'org/tiny-gpt2' is not in",
        ),
    ],
)
def test_unresolvable_hub_ids_fail_in_one_line(hub_cache, tmp_path, argv, message):
    import re

    result = ligo_ds(hub_cache, *argv)
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1 and re.search(message, errors[0]), result.stderr[-2000:]
    assert "Traceback" not in result.stderr


def test_the_api_resolves_a_hub_id_as_the_cli_does(hub_cache):
    """ligo_ds.load_model and load_config take ORG/NAME[@REVISION], as every MODEL option does."""
    code = (
        "import ligo_ds, torch\n"
        "main, old = ligo_ds.load_model('org/tiny-gpt2'), ligo_ds.load_model('org/tiny-gpt2@v1.0')\n"
        "print(ligo_ds.load_config('org/tiny-gpt2').num_layers, main.cfg.hidden_size,\n"
        "      torch.equal(main.tok_emb.weight, old.tok_emb.weight))\n"
        "ligo_ds.load_model('org/no-such-model')\n"
    )
    env = {**os.environ, "HF_HUB_CACHE": str(hub_cache / "cache"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert done.stdout.split() == ["2", "32", "False"], done.stderr[-3000:]  # two commits, two sets of weights
    assert "model org/no-such-model: no such local path, and Hub model 'org/no-such-model' is not in" in done.stderr
