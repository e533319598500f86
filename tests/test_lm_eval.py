"""An export is what lm-evaluation-harness expects: its HF model class (lm_eval.models.huggingface.HFLM)
loads a tiny export, tokenizer included, on the CPU and answers a loglikelihood request with the number
our own decoder gives for the same tokens."""

from __future__ import annotations

import json
import os

import pytest
import torch
import torch.nn.functional as F

from ligo_ds.data.prepare import PrepareOptions, prepare
from ligo_ds.data.reading import TokenData
from ligo_ds.model import tokenizer
from ligo_ds.model.hf_load import load_model
from ligo_ds.model.hf_save import write_checkpoint

from conftest import TINY

try:
    import lm_eval  # noqa: F401
except ImportError:  # a test extra, installed by `make test`; in CI its absence is a failure, not a skip
    if os.environ.get("CI"):
        raise
    pytest.skip("lm-eval is a test extra: pip install -e '.[test]'", allow_module_level=True)


def test_lm_eval_loglikelihood_on_an_export(tmp_path, text_folder):
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    prepare(PrepareOptions(source=str(text_folder), out=str(tmp_path / "data"), vocab_size=320, val_fraction=0.1))
    data = TokenData(tmp_path / "data")
    (tmp_path / "tiny.json").write_text(json.dumps(TINY))
    torch.manual_seed(0)
    model = load_model(tmp_path / "tiny.json")
    out = write_checkpoint(
        model.cfg, model.state_dict().items(), tmp_path / "export", extra=tokenizer.export_files(data.dir, data.eos_id)
    )
    lm = HFLM(pretrained=str(out), device="cpu", batch_size=1, dtype="float32")
    assert lm.eot_token_id == data.eos_id
    context, continuation = "def f3(x):", "\n    return x * 3"  # no trailing space: the harness moves it
    [(loglikelihood, greedy)] = lm.loglikelihood(
        [Instance(request_type="loglikelihood", doc={}, arguments=(context, continuation), idx=0)]
    )
    # The harness's own split: the continuation's tokens are those of the whole beyond the context's.
    tok = tokenizer.load(out)
    whole, ctx = tok.encode(context + continuation), tok.encode(context)
    ids = torch.tensor([whole])
    with torch.no_grad():
        logprobs = F.log_softmax(load_model(out).eval()(ids[:, :-1]), dim=-1)[0]
    picked = logprobs.gather(1, ids[0, 1:, None])[:, 0]
    assert loglikelihood == pytest.approx(picked[len(ctx) - 1 :].sum().item(), rel=1e-5)
    assert isinstance(greedy, bool)
