"""`ligo-ds pretrain`: build the decoder (partitioned under ZeRO-3), start it from its weights, train it
with the trainer, export it. Used for the small model, the scratch baseline and the grown model alike.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from ..data.reading import open_data
from ..distributed import engine as ds_engine
from ..distributed import partition
from ..model.config import ModelConfig
from ..model.decoder import Decoder
from ..model.hf_io import SourceWeights, tied_names
from ..options import PretrainOptions
from . import session
from .trainer import StopRequest, Trainer, TrainState

WeightSource = Callable[[str, torch.Size], torch.Tensor]


def hf_weight_source(directory: Path) -> WeightSource:
    """An HF checkpoint's weights one tensor at a time, in any layout load_model reads (a base-model file's
    names without the class prefix included), checked against its config first."""
    weights = SourceWeights(directory)
    return lambda name, shape: weights[name]


def run(
    opts: PretrainOptions,
    *,
    initial_flops: float = 0.0,
    initial_seconds: float = 0.0,
    init_weights: WeightSource | None = None,
    extra_identity: dict | None = None,
    stop_file: Path | None = None,
) -> Path | None:
    """Train (or resume) the run in opts.out; returns the HF export directory, or None when it stopped
    early on request (SIGTERM/SIGUSR1 or `stop_file`, default RUN_DIR/STOP) after saving a checkpoint.

    Fresh runs start from `init_weights(name, shape)` when given (the grown model, computed on every
    rank), else from opts.model's HF weights when it is a directory, else from a random init.
    `initial_flops` and `initial_seconds` are carried in from earlier work (the operator fit).
    """
    model_cfg = ModelConfig.from_file(opts.model)
    data = open_data(opts.data.data)
    s = session.start(opts, model_cfg, data, extra_identity=extra_identity)
    torch.manual_seed(opts.loop.seed)
    c = opts.compute
    model = ds_engine.build_model(
        lambda: Decoder(model_cfg, c.activation_checkpointing, c.loss_chunk), s.ds_config, s.dtype
    )
    if c.activation_checkpointing != "none" or c.compile:
        # a block's recomputed or compiled forward must not contain ZeRO-3's per-submodule hooks
        ds_engine.gather_whole(list(model.blocks), s.ds_config)
    if c.compile:
        model.compile_blocks()
    tag = session.plan_resume(s)
    branch = session.plan_branch(s, opts) if tag is None and opts.branch_from else None
    if tag is None and branch is None:
        if init_weights is None and Path(opts.model).is_dir():
            init_weights = hf_weight_source(Path(opts.model))
        if init_weights is not None:
            partition.load_weights(model, init_weights, tied_names(model_cfg))
    engine = ds_engine.make_engine(model, ds_engine.param_groups(model, opts.optimizer.weight_decay), s.ds_config)
    trainer = Trainer(engine, s, opts, model_cfg, data)
    fresh = TrainState(flops=initial_flops, train_seconds=initial_seconds)
    state = trainer.branch(*branch) if branch else trainer.resume(tag, fresh)
    stop = StopRequest(Path(stop_file or s.run_dir.root / "STOP"), s.d.device)
    if trainer.train(state, stop):
        return None
    tensors = partition.iter_full_state(engine.module, s.d.rank)
    return session.write_hf(model_cfg, tensors, s.run_dir.hf, s.d, s.dtype, data)
