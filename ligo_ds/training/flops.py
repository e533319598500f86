"""Training FLOPs and MFU: one axis on which scratch and grown runs compare.

Per trained token (forward + backward = 3 x forward):

    flops_per_token = 6 * N_matmul + 12 * L * T * d_attn

N_matmul counts the parameters that take part in matrix products: every block weight and the LM head
(tied or not; the head is a real V x D product, and for small models with large vocabularies it is most
of the compute). Embedding and position lookups cost no FLOPs and are left out, as are norms and biases'
elementwise work. The second term is attention's QK^T and AV products, 2 * 2 * T * d_attn per layer
and token forward, counted over the full T x T square (the PaLM convention, which is what MFU figures
are usually quoted against), with d_attn = heads x head_dim.

A LiGO fit step adds the operator's own work (growth/cost.py): producing every large weight and
back-propagating into the coefficients, and what the fit's embedding and head cost beyond the large model's
head.
"""

from __future__ import annotations

from ..model.config import ModelConfig


def matmul_params(cfg: ModelConfig) -> int:
    d, f = cfg.hidden_size, cfg.intermediate_size
    attn = d * (cfg.q_size + 2 * cfg.kv_size) + cfg.q_size * d
    mlp = d * f * (3 if cfg.gated_mlp else 2)
    return cfg.num_layers * (attn + mlp) + cfg.vocab_size * d


def train_flops_per_token(cfg: ModelConfig, seq_len: int) -> int:
    return 6 * matmul_params(cfg) + 12 * cfg.num_layers * seq_len * cfg.q_size


def forward_flops_per_token(cfg: ModelConfig, seq_len: int) -> int:
    return train_flops_per_token(cfg, seq_len) // 3


# Dense bf16 tensor-core peaks from vendor datasheets, matched as substrings of the device name.
PEAK_TFLOPS = {
    "H200": 989.0,
    "H100": 989.0,
    "A100": 312.0,
    "L40S": 362.0,
    "A10G": 125.0,
    "L4": 121.0,
    "V100": 125.0,
}


def peak_flops(device_name: str, override_tflops: float | None) -> float | None:
    """Peak FLOP/s for MFU: the user's figure, else the table's, else None (no MFU reported)."""
    if override_tflops:
        return override_tflops * 1e12
    for key, tflops in PEAK_TFLOPS.items():
        if key in device_name:
            return tflops * 1e12
    return None
