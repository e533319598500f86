"""Published model pairs people grow: configs with the released shapes (../shared/reference/published-shapes.md,
transformers' field names), and scaled-down analogues keeping each pair's head_dim ratio, head and kv-head
counts' change and layer change at tiny widths. Written by the tests; nothing is downloaded."""

from __future__ import annotations

LLAMA3_SCALING = {
    "rope_type": "llama3",
    "factor": 32.0,
    "high_freq_factor": 4.0,
    "low_freq_factor": 1.0,
    "original_max_position_embeddings": 8192,
}


def _llama(model_type, hidden, inter, layers, heads, kv, head_dim, vocab, theta, positions, **extra) -> dict:
    return {
        **dict(
            model_type=model_type,
            hidden_size=hidden,
            intermediate_size=inter,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=kv,
            head_dim=head_dim,
            vocab_size=vocab,
            tie_word_embeddings=True,
            max_position_embeddings=positions,
            rope_theta=theta,
        ),
        **extra,
    }


def _pythia(hidden, layers, heads, vocab=50304, positions=2048) -> dict:
    return dict(
        model_type="gpt_neox",
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        vocab_size=vocab,
        max_position_embeddings=positions,
        rotary_pct=0.25,
        rotary_emb_base=10000,
        use_parallel_residual=True,
        hidden_act="gelu",
        tie_word_embeddings=False,
    )


def _gemma3(hidden, inter, layers, heads, kv, head_dim, window, positions, vocab=262144, pattern=6, **extra) -> dict:
    return dict(
        model_type="gemma3_text",
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        head_dim=head_dim,
        query_pre_attn_scalar=head_dim,
        vocab_size=vocab,
        max_position_embeddings=positions,
        sliding_window=window,
        sliding_window_pattern=pattern,
        rope_theta=1e6,
        rope_local_base_freq=1e4,
        hidden_activation="gelu_pytorch_tanh",
        tie_word_embeddings=True,
        **extra,
    )


PUBLISHED = {
    "gpt2-124m": dict(model_type="gpt2", n_embd=768, n_layer=12, n_head=12, vocab_size=50257, n_positions=1024),
    "gpt2-355m": dict(model_type="gpt2", n_embd=1024, n_layer=24, n_head=16, vocab_size=50257, n_positions=1024),
    "smollm2-135m": _llama("llama", 576, 1536, 30, 9, 3, 64, 49152, 1e5, 8192),
    "smollm2-360m": _llama("llama", 960, 2560, 32, 15, 5, 64, 49152, 1e5, 8192),
    "smollm2-1.7b": _llama("llama", 2048, 8192, 24, 32, 32, 64, 49152, 1.3e5, 8192),
    "qwen2.5-0.5b": _llama("qwen2", 896, 4864, 24, 14, 2, 64, 151936, 1e6, 32768),
    "qwen2.5-1.5b": _llama("qwen2", 1536, 8960, 28, 12, 2, 128, 151936, 1e6, 32768),
    "llama3.2-1b": _llama("llama", 2048, 8192, 16, 32, 8, 64, 128256, 5e5, 131072, rope_scaling=LLAMA3_SCALING),
    "llama3.2-3b": _llama("llama", 3072, 8192, 28, 24, 8, 128, 128256, 5e5, 131072, rope_scaling=LLAMA3_SCALING),
    "qwen3-0.6b": _llama("qwen3", 1024, 3072, 28, 16, 8, 128, 151936, 1e6, 40960),
    "qwen3-1.7b": _llama("qwen3", 2048, 6144, 28, 16, 8, 128, 151936, 1e6, 40960),
    "olmo2-1b": _llama("olmo2", 2048, 8192, 16, 16, 16, 128, 100352, 5e5, 4096, tie_word_embeddings=False),
    "pythia-160m": _pythia(768, 12, 12),
    "pythia-410m": _pythia(1024, 24, 16),
    "pythia-1b": _pythia(2048, 16, 8),
    "gemma3-1b": _gemma3(1152, 6912, 26, 4, 1, 256, 512, 32768),
    "gemma3-4b": _gemma3(2560, 10240, 34, 8, 4, 256, 1024, 131072, rope_scaling={"rope_type": "linear", "factor": 8.0}),
    "olmo2-7b": _llama("olmo2", 4096, 11008, 32, 32, 32, 128, 100352, 5e5, 4096, tie_word_embeddings=False),
}
PAIRS = [
    ("gpt2-124m", "gpt2-355m"),
    ("smollm2-135m", "smollm2-360m"),
    ("smollm2-360m", "smollm2-1.7b"),
    ("qwen2.5-0.5b", "qwen2.5-1.5b"),
    ("llama3.2-1b", "llama3.2-3b"),
    ("qwen3-0.6b", "qwen3-1.7b"),
    ("olmo2-1b", "olmo2-7b"),
    ("pythia-160m", "pythia-410m"),
    ("pythia-410m", "pythia-1b"),
    ("gemma3-1b", "gemma3-4b"),
]

# The analogues: head_dim 64 -> 8 (128 -> 16), vocabularies of 96, positions 64; each keeps its pair's
# head counts (or their ratio), kv heads, layer change and rope switches.
_SCALING = {**LLAMA3_SCALING, "factor": 4.0, "original_max_position_embeddings": 16}
ANALOGUES = {
    "gpt2": (
        dict(model_type="gpt2", n_embd=48, n_layer=2, n_head=6, vocab_size=96, n_positions=64),
        dict(model_type="gpt2", n_embd=64, n_layer=4, n_head=8, vocab_size=96, n_positions=64),
    ),
    "smollm2-135m-360m": (
        _llama("llama", 72, 96, 3, 9, 3, 8, 96, 1e5, 64),
        _llama("llama", 120, 160, 4, 15, 5, 8, 96, 1e5, 64),
    ),
    "smollm2-360m-1.7b": (
        _llama("llama", 120, 160, 4, 15, 5, 8, 96, 1e5, 64),
        _llama("llama", 256, 512, 3, 32, 32, 8, 96, 1.3e5, 64),
    ),
    "qwen2.5-0.5b-1.5b": (
        _llama("qwen2", 56, 96, 2, 14, 2, 8, 96, 1e6, 64),
        _llama("qwen2", 96, 192, 3, 12, 2, 16, 96, 1e6, 64),
    ),
    "llama3.2-1b-3b": (
        _llama("llama", 64, 96, 2, 8, 2, 8, 96, 5e5, 64, rope_scaling=_SCALING),
        _llama("llama", 96, 192, 4, 6, 2, 16, 96, 5e5, 64, rope_scaling=_SCALING),
    ),
    # Qwen3 keeps heads, kv heads, head_dim and depth and doubles hidden and MLP: q's width (4 x 16) is twice
    # the small model's hidden, as 16 x 128 is twice 1024.
    "qwen3-0.6b-1.7b": (
        _llama("qwen3", 32, 96, 2, 4, 2, 16, 96, 1e6, 64),
        _llama("qwen3", 64, 192, 2, 4, 2, 16, 96, 1e6, 64),
    ),
    # Pythia 160M -> 410M: hidden x4/3, heads 12 -> 16 at head_dim kept, layers x2; 410M -> 1B: head_dim x4
    # (RoPE on its first quarter: 2 -> 8 dims here, 16 -> 64 there) over half the heads, 24 -> 16 layers.
    "pythia-160m-410m": (_pythia(96, 2, 12, vocab=96, positions=64), _pythia(128, 4, 16, vocab=96, positions=64)),
    "pythia-410m-1b": (_pythia(128, 3, 16, vocab=96, positions=64), _pythia(256, 2, 8, vocab=96, positions=64)),
    # Gemma 3 1B -> 4B: hidden x2.2 (q narrower than hidden), heads 4/1 -> 8/4, MLP 6x -> 4x hidden, layers
    # 26 -> 34 in a local:global pattern (here 2:1, 5 -> 8 layers), window 512 -> 1024 (8 -> 16), the global
    # RoPE scaled by 8 in the larger one.
    "gemma3-1b-4b": (
        _gemma3(36, 216, 5, 4, 1, 16, 8, 64, vocab=96, pattern=3),
        _gemma3(80, 320, 8, 8, 4, 16, 16, 64, vocab=96, pattern=3, rope_scaling={"rope_type": "linear", "factor": 8.0}),
    ),
    # OLMo 2 doubles hidden, heads (MHA) and depth at head_dim kept, and its MLP by 11008 / 8192; untied.
    "olmo2-1b-7b": (
        _llama("olmo2", 32, 128, 2, 4, 4, 8, 96, 5e5, 64, tie_word_embeddings=False),
        _llama("olmo2", 64, 172, 4, 8, 8, 8, 96, 5e5, 64, tie_word_embeddings=False),
    ),
}
