"""Text at each evaluation (--sample-prompts FILE): the file's prompts continued greedily by the model being
trained, with the data's tokenizer, into metrics.jsonl's "generated" column and TensorBoard's text tab.

Greedy decoding makes two evaluations' texts differ only because the model did, so a run's samples read as
its progress. Every rank runs every forward (under ZeRO-3 each forward gathers the weights from all of
them), and each new token is rank 0's, so the ranks stop together.
"""

from __future__ import annotations

import torch

from ..distributed import launch
from ..errors import ConfigError
from ..model import tokenizer
from ..model.generation import generate, read_prompts


class Sampler:
    def __init__(self, engine, data, prompts_file: str, flag: str, new_tokens: int, limit: int, d):
        self.engine, self.d, self.new_tokens, self.limit = engine, d, new_tokens, limit
        self.prompts = read_prompts(prompts_file, flag)
        self.tok = tokenizer.load(data.dir, f"{flag}: the data's tokenizer directory")
        self.ids = [self.tok(p)["input_ids"] for p in self.prompts]
        for prompt, ids in zip(self.prompts, self.ids, strict=True):
            if len(ids) >= limit:
                raise ConfigError(
                    f"{flag} {prompts_file!r}: the prompt {prompt[:40]!r} is {len(ids)} tokens, and the model "
                    f"holds {limit} positions; expected prompts shorter than that"
                )
        self.stops = {data.eos_id}

    @torch.no_grad()
    def sample(self) -> list[dict[str, str]]:
        """[{"prompt", "text"}] for every prompt: the text its greedy continuation adds."""
        self.engine.eval()
        out = []
        for prompt, ids in zip(self.prompts, self.ids, strict=True):
            new = generate(
                self.engine,
                ids,
                self.new_tokens,
                self.limit,
                self.stops,
                device=self.d.device,
                agree=launch.broadcast_object,
            )
            out.append({"prompt": prompt, "text": self.tok.decode(new, skip_special_tokens=True)})
        self.engine.train()
        return out
