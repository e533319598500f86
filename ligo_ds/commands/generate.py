"""`ligo-ds generate`: text from a model, with its own tokenizer, printed as it comes.

MODEL is what every command's MODEL is (api.model_path): an HF directory, a Hub id, or a RUN_DIR (its final
model, whose hf/ holds the tokenizer and generation_config.json the run's data was made with). Decoding
stops at the model's end-of-sequence ids (generation_config.json, else the tokenizer's eos), at
--max-new-tokens, or at the model's positions. Temperature 0 is greedy decoding, token for token what
transformers' `generate(do_sample=False)` gives on the same directory; otherwise the logits are divided
by the temperature, cut to the top k and to the smallest set of probability top p, and sampled with
--seed (model/generation.py, which training's --sample-prompts uses too).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from ..api import model_path
from ..errors import ConfigError
from ..model import tokenizer
from ..model.generation import Sampling, generate, read_prompts
from ..model.hf_load import load_model
from ..options import Command, at_least, between, option


@dataclass(frozen=True, kw_only=True)
class GenerateOptions(Command):
    model: str = option(
        help="an HF model directory or a RUN_DIR (its final model)",
        metavar="MODEL",
        positional=True,
        hub="model",
        identity=False,
    )
    prompt: str | None = option(None, "the text to continue", shown_default="an empty prompt", identity=False)
    prompts: str | None = option(None, "a text file of prompts, one a line", metavar="FILE", identity=False)
    max_new_tokens: int = option(64, "tokens to add to each prompt, at most", check=at_least(1), identity=False)
    temperature: float = option(0.8, "0 for greedy decoding", check=at_least(0), identity=False)
    top_k: int | None = option(None, "sample among the k likeliest tokens", check=at_least(1), identity=False)
    top_p: float | None = option(
        None, "sample among the likeliest tokens holding this much probability", check=between(0.0, 1.0), identity=False
    )
    seed: int = option(0, "the sampling seed", identity=False)


Options = GenerateOptions
CONFIG_FILE = False


def prompts_of(opts: GenerateOptions) -> list[str]:
    if opts.prompt is not None and opts.prompts is not None:
        raise ConfigError(f"give {opts.flag('prompt')} or {opts.flag('prompts')}, not both")
    if opts.prompts is None:
        return [opts.prompt or ""]
    return read_prompts(opts.prompts, opts.flag("prompts"))


def stop_ids(directory: Path, tok) -> set[int]:
    """The ids that end generation: generation_config.json's eos ids, else the tokenizer's eos."""
    path = directory / "generation_config.json"
    ids = json.loads(path.read_text()).get("eos_token_id") if path.is_file() else None
    if ids is None:
        ids = tok.eos_token_id
    return set(ids if isinstance(ids, list) else [ids] if ids is not None else [])


class Printer:
    """Writes the text decoded so far less what is already on screen; a character cut between byte-level
    tokens waits for its next bytes."""

    def __init__(self, tok):
        self.tok, self.shown = tok, 0

    def __call__(self, new: list[int], last: bool = False) -> None:
        text = self.tok.decode(new, skip_special_tokens=True)
        if last or not text.endswith("\ufffd"):
            sys.stdout.write(text[self.shown :])
            sys.stdout.flush()
            self.shown = len(text)


def run(opts: GenerateOptions) -> int:
    """Continue each prompt with the model, printing the text as it comes."""
    prompts = prompts_of(opts)
    directory = model_path(opts.model)
    if directory.is_file():
        raise ConfigError(f"MODEL {opts.model!r} is a config file; generate needs trained weights and a tokenizer")
    tok = tokenizer.load(directory, "MODEL")
    model = load_model(directory).eval()
    stops = stop_ids(directory, tok)
    gen = torch.Generator().manual_seed(opts.seed)
    how = Sampling(opts.temperature, opts.top_k, opts.top_p)
    for prompt in prompts:
        ids = tok(prompt)["input_ids"] if prompt else [tok.bos_token_id] if tok.bos_token_id is not None else []
        if not ids:
            raise ConfigError(
                f"an empty prompt needs a BOS token, and {opts.model!r}'s tokenizer has none; give --prompt"
            )
        sys.stdout.write(prompt)
        printer = Printer(tok)
        new = generate(model, ids, opts.max_new_tokens, model.cfg.max_positions, stops, how, gen, emit=printer)
        printer(new, last=True)  # what still waited for bytes
        sys.stdout.write("\n")
    return 0
