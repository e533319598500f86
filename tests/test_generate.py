"""commands/generate.py: text from a model with its own tokenizer. Greedy decoding is transformers' own
generate on the same directory, token for token; sampling is reproducible by seed and narrows as top-k and
top-p say; a RUN_DIR means its final model; bad prompts are refused in one line."""

from __future__ import annotations

import pytest
import torch
import transformers

from ligo_ds import ConfigError
from ligo_ds.commands.generate import GenerateOptions, run
from ligo_ds.model.generation import Sampling, next_token
from ligo_ds.options import from_values

from conftest import TINY, make_hf_model, make_tokenizer, refused_up_front


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A random Llama with a Llama 2 style tokenizer (a BOS before each prompt, </s> its eos)."""
    d = make_tokenizer(tmp_path_factory.mktemp("gen") / "model", "llama2")
    make_hf_model(TINY, std=0.3).save_pretrained(d)
    return d


def _generate(capsys, **values) -> str:
    capsys.readouterr()
    assert run(from_values(GenerateOptions, values)) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("prompt", ["def f1(x):", "class K3"])
def test_greedy_is_transformers_generate(model_dir, capsys, prompt):
    printed = _generate(capsys, model=str(model_dir), prompt=prompt, temperature=0.0, max_new_tokens=16)
    tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    hf = transformers.AutoModelForCausalLM.from_pretrained(model_dir).eval()
    inputs = tok(prompt, return_tensors="pt")
    with torch.no_grad():
        out = hf.generate(**inputs, max_new_tokens=16, do_sample=False, pad_token_id=tok.eos_token_id)
    expected = prompt + tok.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert printed == expected + "\n"
    assert len(out[0]) > inputs["input_ids"].shape[1] + 2  # something was generated to compare


def test_sampling_follows_the_seed_and_its_limits(model_dir, capsys):
    one = dict(model=str(model_dir), prompt="def f", max_new_tokens=12, temperature=1.0)
    assert _generate(capsys, **one, seed=3) == _generate(capsys, **one, seed=3)
    assert {_generate(capsys, **one, seed=s) for s in range(4)} != {_generate(capsys, **one, seed=3)}
    greedy = _generate(capsys, model=str(model_dir), prompt="def f", max_new_tokens=12, temperature=0.0)
    assert _generate(capsys, **one, top_k=1, seed=7) == greedy
    assert _generate(capsys, **one, top_p=1e-6, seed=7) == greedy  # the likeliest token alone


def test_top_k_and_top_p_keep_what_they_say():
    logits = torch.tensor([4.0, 3.0, 2.0, 1.0, 0.0])
    gen = torch.Generator().manual_seed(0)
    assert {next_token(logits, Sampling(1.0, 2, None), gen) for _ in range(200)} == {0, 1}
    # probabilities 0.64, 0.24, 0.09, ...: p 0.7 keeps the first two (the smallest set reaching it)
    assert {next_token(logits, Sampling(1.0, None, 0.7), gen) for _ in range(200)} == {0, 1}
    assert next_token(logits, Sampling(), gen) == 0


def test_prompts_file_and_refusals(model_dir, capsys, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("def a\n\nclass B\n")
    out = _generate(capsys, model=str(model_dir), prompts=str(prompts), temperature=0.0, max_new_tokens=4)
    lines = out.splitlines()
    assert len(lines) == 2 and lines[0].startswith("def a") and lines[1].startswith("class B"), out
    with pytest.raises(ConfigError, match="give --prompt or --prompts, not both"):
        run(from_values(GenerateOptions, dict(model=str(model_dir), prompt="x", prompts=str(prompts))))
    with pytest.raises(ConfigError, match="--prompts '.*missing.txt' is not a file"):
        run(from_values(GenerateOptions, dict(model=str(model_dir), prompts=str(tmp_path / "missing.txt"))))
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(ConfigError, match="is a config file; generate needs trained weights and a tokenizer"):
        run(from_values(GenerateOptions, dict(model=str(tmp_path / "config.json"))))


@pytest.mark.parametrize(
    "prompts, extra, message",
    [
        (None, [], r"--sample-prompts '.*missing.txt' is not a file; expected a text file, a prompt a line"),
        ("\n  \n", [], r"--sample-prompts '.*prompts.txt' holds no prompt"),
        ("def f\n", ["--sample-tokens", "0"], r"--sample-tokens 0: expected at least 1"),
    ],
)
def test_bad_sample_prompts_are_refused_before_training(tmp_path, capsys, prompts, extra, message):
    """Samples at each evaluation (the 2-rank ZeRO-3 run of test_pretrain.py writes and checks them): a prompts
    file that is missing or empty is refused up front, in one line, with nothing written."""
    path = tmp_path / ("missing.txt" if prompts is None else "prompts.txt")
    if prompts is not None:
        path.write_text(prompts)
    refused_up_front(tmp_path, capsys, ["--sample-prompts", str(path), *extra], message)
