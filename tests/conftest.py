"""Shared fixtures and helpers: tiny Hugging Face models of every supported family made here with random
weights, tiny run inputs, and the growth tests' sources and targets. Longer than a module should be: the
session-scoped fixtures live here so that the multi-process test files build their inputs once."""

from __future__ import annotations

import json
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# One intra-op thread in this process, as procs.job_env asks of the jobs the tests start: the tensors here are
# tiny, so a second OpenMP thread computes nothing and only waits, and whenever anything else holds a core each
# op then costs milliseconds instead of microseconds (test_flops.py: 66 s against 17 s so). An OMP_NUM_THREADS
# given by the caller is kept.
if "OMP_NUM_THREADS" not in os.environ:
    torch.set_num_threads(1)

# The Llama-family rows' shape: 4 query heads over 2 key-value heads of 16.
_GQA_SHAPE = dict(
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=96,
    max_position_embeddings=64,
)

# One row per supported layout: family switches, GQA, tied/untied, biases, rope_theta, explicit head_dim,
# sliding window. Shapes are tiny so every test runs in milliseconds.
HF_CASES: dict[str, dict] = {
    "gpt2": dict(model_type="gpt2", n_embd=64, n_layer=2, n_head=4, vocab_size=96, n_positions=64),
    "gpt2_untied_gelu": dict(
        model_type="gpt2",
        n_embd=48,
        n_layer=3,
        n_head=3,
        n_inner=80,
        vocab_size=96,
        n_positions=64,
        activation_function="gelu",
        tie_word_embeddings=False,
    ),
    "llama": dict(model_type="llama", **{**_GQA_SHAPE, "num_key_value_heads": 4}),
    "llama_gqa_tied": dict(
        model_type="llama",
        **_GQA_SHAPE,
        tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
    ),
    "llama_bias": dict(
        model_type="llama",
        **{**_GQA_SHAPE, "num_key_value_heads": 1},
        attention_bias=True,
        mlp_bias=True,
        rope_parameters={"rope_type": "default", "rope_theta": 1000.0},
    ),
    "qwen2_gqa": dict(model_type="qwen2", **_GQA_SHAPE, tie_word_embeddings=True),
    # RoPE scaling, each kind in the config layout it is found in on the Hub: Llama 3.x files carry
    # rope_theta beside rope_scaling; transformers >= 5 writes rope_parameters; old files say "type".
    # original_max_position_embeddings is below the 24 positions the tests run, so every kind bends.
    "llama3_rope": dict(
        model_type="llama",
        **_GQA_SHAPE,
        tie_word_embeddings=True,
        rope_theta=500000.0,
        rope_scaling={
            "factor": 8.0,
            "high_freq_factor": 4.0,
            "low_freq_factor": 1.0,
            "original_max_position_embeddings": 16,
            "rope_type": "llama3",
        },
    ),
    "llama_linear_rope": dict(
        model_type="llama", **_GQA_SHAPE, rope_parameters={"rope_type": "linear", "rope_theta": 1e4, "factor": 4.0}
    ),
    "mistral_dynamic_rope": dict(
        model_type="mistral", **_GQA_SHAPE, rope_theta=10000.0, rope_scaling={"type": "dynamic", "factor": 2.0}
    ),
    "qwen2_yarn_rope": dict(
        model_type="qwen2",
        **_GQA_SHAPE,
        tie_word_embeddings=True,
        rope_parameters={"rope_type": "yarn", "rope_theta": 1e6, "factor": 4.0, "original_max_position_embeddings": 16},
    ),
    # Qwen3: q_size (4 x 32) differs from hidden, per-head q/k norms, tied, every layer full attention.
    "qwen3_headdim_qknorm": dict(
        model_type="qwen3",
        **{**_GQA_SHAPE, "head_dim": 32},
        tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 1e6},
    ),
    # OLMo 2: norms after the sublayers, q/k norms over the whole projection, untied.
    "olmo2": dict(model_type="olmo2", **_GQA_SHAPE, rope_parameters={"rope_type": "default", "rope_theta": 5e5}),
    "olmo2_bias": dict(model_type="olmo2", **{**_GQA_SHAPE, "num_key_value_heads": 4}, attention_bias=True),
    # GPT-NeoX (Pythia): parallel residual, RoPE on a quarter of each head, per-head fused qkv, LayerNorm biases.
    "gpt_neox": dict(
        model_type="gpt_neox",
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        vocab_size=96,
        max_position_embeddings=64,
        rotary_pct=0.25,
        rotary_emb_base=10000,
    ),
    "gpt_neox_sequential_half": dict(
        model_type="gpt_neox",
        hidden_size=48,
        intermediate_size=80,
        num_hidden_layers=2,
        num_attention_heads=2,
        vocab_size=96,
        max_position_embeddings=64,
        use_parallel_residual=False,
        rope_parameters={"rope_type": "default", "rope_theta": 500.0, "partial_rotary_factor": 0.5},
        tie_word_embeddings=True,
    ),
    # Gemma 3: (1 + w) RMSNorms before and after each sublayer, per-head q/k norms, GeGLU, the embedding
    # scaled by sqrt(hidden), q.k / sqrt(query_pre_attn_scalar); sliding layers (window 8 < the tests' 24
    # positions) on a local base beside a full one on the global base, as the Hub files write them.
    "gemma3": dict(
        model_type="gemma3_text",
        **{**_GQA_SHAPE, "head_dim": 32, "num_hidden_layers": 3},
        query_pre_attn_scalar=24,
        sliding_window=8,
        sliding_window_pattern=2,
        rope_theta=1e6,
        rope_local_base_freq=1e4,
    ),
    "gemma3_linear_rope": dict(
        model_type="gemma3_text",
        **{**_GQA_SHAPE, "num_hidden_layers": 2, "head_dim": 16},
        sliding_window=8,
        layer_types=["sliding_attention", "full_attention"],
        rope_parameters={
            "sliding_attention": {"rope_type": "default", "rope_theta": 1e4},
            "full_attention": {"rope_type": "linear", "rope_theta": 1e6, "factor": 8.0},
        },
    ),
    "mistral_window_headdim": dict(
        model_type="mistral",
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        vocab_size=96,
        max_position_embeddings=64,
        sliding_window=8,
    ),
}


def make_hf_model(case: str | dict, seed: int = 0, std: float = 0.2):
    """A transformers causal LM of the given tiny shape, every weight (biases and norms too) random."""
    import copy

    import transformers

    # A deep copy: transformers' config classes write into the nested RoPE dicts they are given (rope_theta
    # into rope_scaling), which would change HF_CASES for every later test.
    spec = copy.deepcopy(HF_CASES[case] if isinstance(case, str) else case)
    config = transformers.AutoConfig.for_model(**spec)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    with torch.no_grad():
        for p in model.parameters():  # HF init leaves biases at 0 and norms at 1: they would test nothing
            p.normal_(0.0, std)
    return model.eval()


def _class_weights(model) -> dict:
    tied = model.config.tie_word_embeddings
    return {k: v.contiguous() for k, v in model.state_dict().items() if not (tied and k == "lm_head.weight")}


def old_buffers(model) -> dict[str, torch.Tensor]:
    """The buffers transformers of an earlier time saved beside the weights, under the class's names: GPT-2's
    causal mask and masked_bias, Llama's inv_freq, GPT-NeoX's (Pythia's files) all three."""
    cfg, prefix = model.config, model.base_model_prefix + "."
    state = {}
    for i in range(cfg.num_hidden_layers):
        if cfg.model_type == "gpt2":
            n = cfg.n_positions
            state[f"h.{i}.attn.bias"] = torch.tril(torch.ones(n, n)).view(1, 1, n, n)
            state[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
        elif cfg.model_type == "gpt_neox":
            n, e = cfg.max_position_embeddings, cfg.hidden_size // cfg.num_attention_heads
            state[f"layers.{i}.attention.bias"] = torch.tril(torch.ones(n, n, dtype=torch.bool)).view(1, 1, n, n)
            state[f"layers.{i}.attention.masked_bias"] = torch.tensor(-1e9)
            state[f"layers.{i}.attention.rotary_emb.inv_freq"] = 1.0 / 10000 ** (torch.arange(0, e // 4, 2) / (e // 4))
        else:
            e = cfg.hidden_size // cfg.num_attention_heads
            state[f"layers.{i}.self_attn.rotary_emb.inv_freq"] = 1.0 / 10000 ** (torch.arange(0, e, 2) / e)
    return {prefix + k: v for k, v in state.items()}


def hub_base_model_state(model) -> dict[str, torch.Tensor]:
    """As the original Hub checkpoints are: the base model's names without its prefix, no head, and the
    buffers transformers of that time saved (old_buffers)."""
    prefix = model.base_model_prefix + "."
    state = {**_class_weights(model), **old_buffers(model)}
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def class_state_with_old_buffers(model) -> dict[str, torch.Tensor]:
    """The class's own names, head included, with the old buffers beside them (Pythia's files)."""
    return {**_class_weights(model), **old_buffers(model)}


def make_inputs(
    root,
    line: str,
    *,
    docs: int = 60,
    repeat: int = 6,
    small: dict | None = None,
    large: dict | None = None,
    seed: int = 3,
):
    """A run's inputs under `root`: a corpus of `docs` files (`line` formatted with the index, repeated),
    its prepared DATA_DIR (vocabulary 320), and optionally a random small HF model and a large config."""
    import json

    from ligo_ds.data.prepare import PrepareOptions, prepare

    corpus = root / "corpus"
    corpus.mkdir(parents=True)
    for i in range(docs):
        (corpus / f"{i:03d}.txt").write_text(line.format(i=i, m=i % 5) * repeat)
    # Shards of 1k tokens: every training test reads across shard seams.
    prepare(
        PrepareOptions(source=str(corpus), out=str(root / "data"), vocab_size=320, val_fraction=0.1, shard_bytes=2048)
    )
    if small is not None:
        make_hf_model(small, seed=seed, std=0.05).save_pretrained(root / "small")
    if large is not None:
        (root / "large.json").write_text(json.dumps(large))
    return root


@pytest.fixture
def hf_checkpoint(tmp_path):
    """Factory: save a random tiny HF model of `case` and return (model, directory)."""

    def make(case: str | dict, seed: int = 0):
        model = make_hf_model(case, seed)
        directory = tmp_path / f"hf_{case if isinstance(case, str) else 'custom'}_{seed}"
        model.save_pretrained(directory)
        return model, directory

    return make


@pytest.fixture(autouse=True)
def _restore_torch_state():
    """Tests must not leak global torch state into each other."""
    dtype, threads = torch.get_default_dtype(), torch.get_num_threads()
    yield
    torch.set_default_dtype(dtype)
    torch.set_num_threads(threads)


# ---- growth: random sources and doubled targets ------------------------------------------------------


def doubled(case: str, layers: int = 2) -> dict:
    """The case's HF config with hidden size, heads, kv heads and MLP width x2, layers x `layers`."""
    h = dict(HF_CASES[case])
    if h["model_type"] == "gpt2":
        h.update(
            n_embd=2 * h["n_embd"],
            n_head=2 * h["n_head"],
            n_layer=layers * h["n_layer"],
            n_inner=2 * (h.get("n_inner") or 4 * h["n_embd"]),
        )
    else:
        h.update(
            hidden_size=2 * h["hidden_size"],
            num_attention_heads=2 * h["num_attention_heads"],
            num_key_value_heads=2 * h["num_key_value_heads"],
            intermediate_size=2 * h["intermediate_size"],
            num_hidden_layers=layers * h["num_hidden_layers"],
        )
        if "head_dim" in h:
            h["head_dim"] = HF_CASES[case]["head_dim"]
    return h


def random_source(case: str, seed: int = 0):
    """Our decoder of the case's shape with random weights, norms and biases included."""
    from ligo_ds import ModelConfig
    from ligo_ds.model.decoder import Decoder

    torch.manual_seed(seed)
    model = Decoder(ModelConfig.from_hf(HF_CASES[case])).eval()
    with torch.no_grad():  # random norms and biases too, so they are tested
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def ids_for(cfg, T: int = 20) -> torch.Tensor:
    return torch.randint(0, cfg.vocab_size, (2, T), generator=torch.Generator().manual_seed(5))


def perturb(module: torch.nn.Module, scale: float = 0.05) -> None:
    """Move every learned parameter away from its initialisation (and from any special case)."""
    with torch.no_grad():
        for p in module.parameters():
            if p.requires_grad:
                p.add_(scale * torch.randn_like(p))


# ---- a tiny pretraining setup, shared by the multi-process test files ---------------------------------

TINY = dict(
    model_type="llama",
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=320,
    max_position_embeddings=64,
    tie_word_embeddings=False,
)


@pytest.fixture(scope="session")
def pretrain_setup(tmp_path_factory):
    """A prepared corpus (vocabulary 320) and the TINY model's config.json."""
    import json

    from ligo_ds.data.prepare import PrepareOptions, prepare

    root = tmp_path_factory.mktemp("pretrain")
    corpus = root / "corpus"
    corpus.mkdir()
    for i in range(80):
        (corpus / f"{i:03d}.txt").write_text(f"def function_{i}(a, b):\n    return a * {i} - b ** {i % 5}\n" * 6)
    # Shards of 1k tokens: every training test reads across shard seams.
    prepare(
        PrepareOptions(source=str(corpus), out=str(root / "data"), vocab_size=320, val_fraction=0.1, shard_bytes=2048)
    )
    (root / "tiny.json").write_text(json.dumps(TINY))
    return root


def refused_up_front(tmp_path, capsys, extra: list[str], message: str) -> None:
    """`ligo-ds pretrain` with `extra` flags, in this process: exit 2 with one line matching `message`,
    before any input is read or anything written."""
    import re

    from ligo_ds.cli import main

    out = tmp_path / "run"
    args = cli("pretrain", model=tmp_path / "tiny.json", data=tmp_path / "data", out=out, max_steps=10, warmup_steps=2)
    assert main([*args, *extra]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and re.search(message, lines[0]), lines
    assert not out.exists()


def cli(command: str, *args, **flags) -> list[str]:
    """A `ligo-ds` command line: cli("fit", seq_len=32) -> ["fit", "--seq-len", "32"]; positional `args`
    (strings or paths) follow the flags."""
    from ligo_ds.options import to_args

    return [command, *to_args(**flags), *map(str, args)]


def train_args(setup, out, *extra):
    """`ligo-ds pretrain` of the TINY model on the shared setup's data."""
    common = dict(seq_len=32, lr="3e-3", warmup_steps=2, log_every=1, eval_every=3, eval_samples=6, seed=7)
    return [*cli("pretrain", model=setup / "tiny.json", data=setup / "data", out=out, **common), *extra]


@pytest.fixture(scope="session")
def pretrain_reference(pretrain_setup):
    """One process, ZeRO-2, micro-batch 4: the global batch the 2-rank runs reproduce with 2 x 2."""
    from procs import ligo

    out = pretrain_setup / "ref"
    ligo("single", 1, train_args(pretrain_setup, out, "--max-steps", "6", "--micro-batch", "4", "--ds-config", "zero2"))
    return out


SAMPLE_PROMPTS = "def function_1(a, b):\n\n    return a\n"


@pytest.fixture(scope="session")
def two_rank_run(pretrain_setup):
    """Factory: `two_rank_run(stage)` is the 2-rank run under that ZeRO stage, micro-batch 2 x 2 ranks and 6
    steps (the reference's global batch and length), started once a session: test_trainer.py compares it
    with the reference, test_pretrain.py exports the ZeRO-3 one (each launch costs seconds of start-up)."""
    from procs import ligo

    runs: dict[str, object] = {}

    def run(stage: str):
        if stage not in runs:
            out = pretrain_setup / f"two_{stage}"
            # The ZeRO-3 run also writes samples at each evaluation (test_pretrain.py checks them; the losses
            # test_trainer.py compares show that sampling changes nothing of the training)
            prompts = pretrain_setup / "prompts.txt"
            prompts.write_text(SAMPLE_PROMPTS)
            samples = ["--sample-prompts", str(prompts), "--sample-tokens", "8"] if stage == "zero3" else []
            ligo(
                "torchrun",
                2,
                train_args(
                    pretrain_setup, out, "--max-steps", "6", "--micro-batch", "2", "--ds-config", stage, *samples
                ),
            )
            runs[stage] = out
        return runs[stage]

    return run


def losses(run_dir):
    """(training losses, validation losses, steps) of a run's metrics rows, None where a row has none."""
    from ligo_ds.training.rundir import read_metrics

    rows = read_metrics(run_dir / "metrics.jsonl")
    return [r.get("loss") for r in rows], [r.get("val_loss") for r in rows], [r["step"] for r in rows]


# ---- a tiny growth setup: a Llama pair with GQA, shared by the fit, grow, reliability and Slurm tests ----

SMALL_LLAMA = dict(
    model_type="llama",
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=320,
    max_position_embeddings=64,
    tie_word_embeddings=True,
)
LARGE_LLAMA = {
    **SMALL_LLAMA,
    "hidden_size": 64,
    "intermediate_size": 96,
    "num_hidden_layers": 4,
    "num_attention_heads": 8,
    "num_key_value_heads": 4,
}


@pytest.fixture(scope="session")
def growth_setup(tmp_path_factory):
    """A prepared corpus, a random small SMALL_LLAMA checkpoint (`small/`) and LARGE_LLAMA (`large.json`)."""
    return make_inputs(
        tmp_path_factory.mktemp("fit"),
        "class K{i}:\n    def m(self, x):\n        return x + {i}\n",
        docs=80,
        repeat=5,
        small=SMALL_LLAMA,
        large=LARGE_LLAMA,
    )


def series(run_dir, key):
    """One metrics column of a run, over the rows that have it."""
    from ligo_ds.training.rundir import read_metrics

    return [r[key] for r in read_metrics(run_dir / "metrics.jsonl") if key in r]


# ---- a small mixed corpus (txt in folders, jsonl) for prepare and the reader --------------------------

DOCS = [f"def f{i}(x):\n    return x * {i} + {'y' * (i % 7)}\n# doc {i} ünïcode\n" for i in range(60)]


@pytest.fixture
def text_folder(tmp_path):
    """40 .txt documents in two folders and 20 more in a .jsonl file."""
    folder = tmp_path / "corpus"
    (folder / "sub").mkdir(parents=True)
    for i, doc in enumerate(DOCS[:40]):
        (folder / ("sub" if i % 2 else "") / f"{i:03d}.txt").write_text(doc)
    with open(folder / "more.jsonl", "w") as f:
        for doc in DOCS[40:]:
            f.write(json.dumps({"text": doc, "id": 1}) + "\n")
    return folder


# Tokenizers in the layouts their models ship, with other special tokens than the one prepare trains.
# style -> (special tokens in id order, the BOS its post-processor adds, eos in tokenizer_config.json,
#           eos_token_id in generation_config.json)
TOKENIZER_STYLES = {
    "llama2": (["<unk>", "<s>", "</s>"], "<s>", "</s>", None),  # Llama 2 and Mistral
    "llama3": (["<|begin_of_text|>", "<|end_of_text|>"], "<|begin_of_text|>", None, 1),  # eos only in generation
    "gpt2": (["<|endoftext|>"], None, "<|endoftext|>", None),
    # Qwen3 (a hybrid chat model): no BOS, eos the end of a chat turn, documents ended by <|endoftext|>
    "qwen3": (["<|endoftext|>", "<|im_start|>", "<|im_end|>"], None, "<|im_end|>", None),
    # Gemma 3: <bos> before each document (its post-processor), <eos> in tokenizer_config.json
    "gemma3": (["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"], "<bos>", "<eos>", None),
    "no_eos": (["<pad>"], None, None, None),
}


def make_tokenizer(directory, style: str, vocab_size: int = 320):
    """A byte-level BPE trained on DOCS, saved as a model repository holds it; returns the directory."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    special, bos, eos, generation_eos = TOKENIZER_STYLES[style]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    backend.train_from_iterator(DOCS, trainer=trainer)
    if bos:
        backend.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", special_tokens=[(bos, backend.token_to_id(bos))]
        )
    tokens = {"bos_token": bos, "eos_token": eos, "unk_token": "<unk>" if "<unk>" in special else None}
    PreTrainedTokenizerFast(tokenizer_object=backend, **{k: v for k, v in tokens.items() if v}).save_pretrained(
        directory
    )
    if generation_eos is not None:
        (directory / "generation_config.json").write_text(json.dumps({"eos_token_id": [generation_eos, 0]}))
    return directory
