"""The option blocks pretrain, fit and grow share, each option declared once: type, default, help, check.

Batch sizes, the optimizer, the learning-rate schedule and clipping have one home, here. DeepSpeed JSON
files hold only DeepSpeed knobs (ds_config.py refuses one that also sets ours and disagrees).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..data.reading import VERIFY_MODES
from ..errors import ConfigError
from ..growth.init import DEPTH_INITS, WIDTH_INITS
from ..growth.spec import ORDERS, TYINGS, GrowthSpec
from ..model.compute import CHECKPOINTING, LOSS_CHUNK
from .declare import above, at_least, between, option, unit_interval

Flag = Callable[[str], str]  # a block field's name -> the flag that sets it in the current command


@dataclass(frozen=True, kw_only=True)
class Data:
    """Tokens: where they are, and how long a training sequence is."""

    data: str = option(
        help="DATA_DIR written by `ligo-ds prepare`, or a mixture of several by weight: web=0.7,code=0.3",
        metavar="DATA_DIR",
    )
    seq_len: int = option(256, "tokens per sequence", check=at_least(1))
    verify_data: str = option(
        "checksum",
        "check the shards at start: SHA-256 (each rank hashes its share) or sizes only",
        choices=VERIFY_MODES,
    )
    allow_tokenizer_mismatch: bool = option(
        False, "train on data tokenized otherwise than the model's own tokenizer (its directory's) says"
    )


@dataclass(frozen=True, kw_only=True)
class Loop:
    """The training loop: batch, clipping and the seed of the data order and initialisation."""

    micro_batch: int = option(8, "sequences per rank per forward", check=at_least(1))
    grad_accum: int = option(
        1, "micro-batches per optimizer step; global batch = micro x accum x ranks", check=at_least(1)
    )
    grad_clip: float = option(1.0, "max global gradient norm, 0 disables", check=at_least(0))
    seed: int = option(1337, "data order and init seed")

    def global_batch(self, world_size: int) -> int:
        return self.micro_batch * self.grad_accum * world_size


SCHEDULES = ("cosine", "wsd", "constant")
DECAYS = ("linear", "cosine", "1-sqrt")  # schedule.DECAY_SHAPES
DEFAULT_DECAY_FRACTION = 0.2
DEFAULT_DECAY_SHAPE = "linear"


@dataclass(frozen=True, kw_only=True)
class Schedule:
    """How long to train, and the learning rate over that time (schedule.py: linear warmup, then cosine
    decay, warmup-stable-decay, or constant)."""

    max_steps: int | None = option(None, "optimizer steps (or give --max-tokens)", check=at_least(1))
    max_tokens: int | None = option(
        None, "training tokens, rounded up to whole steps (e.g. 1e11, 100B, 2.5T)", check=at_least(1)
    )
    lr: float = option(6e-4, "peak learning rate", check=above(0))
    min_lr: float | None = option(None, "the floor the decay ends at", shown_default="lr / 10", check=at_least(0))
    warmup_steps: int = option(100, "linear warmup steps", check=at_least(0))
    schedule: str = option(
        "cosine",
        "after the warmup: cosine decay to the floor, wsd (stable at the peak, then --decay-fraction of the run "
        "decaying), or constant",
        choices=SCHEDULES,
    )
    decay_fraction: float | None = option(
        None,
        "wsd: the share of the run spent decaying",
        shown_default=str(DEFAULT_DECAY_FRACTION),
        check=between(0.0, 1.0),
    )
    decay_shape: str | None = option(None, "wsd: the decay's shape", choices=DECAYS, shown_default=DEFAULT_DECAY_SHAPE)

    def check(self, flag: Flag) -> None:
        if (self.max_steps is None) == (self.max_tokens is None):
            raise ConfigError(
                f"give exactly one of {flag('max_steps')} ({self.max_steps}) and {flag('max_tokens')} "
                f"({self.max_tokens})"
            )
        if self.schedule != "wsd":
            for name in ("decay_fraction", "decay_shape"):
                if getattr(self, name) is not None:
                    raise ConfigError(
                        f"{flag(name)} {getattr(self, name)} shapes wsd's decay; this run's "
                        f"{flag('schedule')} is {self.schedule}"
                    )
        if self.schedule == "constant" and self.min_lr is not None:
            raise ConfigError(f"{flag('min_lr')} {self.min_lr}: a constant {flag('schedule')} never decays to a floor")
        if self.min_lr is not None and self.min_lr > self.lr:
            raise ConfigError(
                f"learning rates must satisfy 0 <= {flag('min_lr')} ({self.min_lr}) <= {flag('lr')} ({self.lr})"
            )
        if self.max_steps is not None:  # with --max-tokens the length needs the world size: session.start
            self.check_warmup(self.max_steps, flag)

    def check_warmup(self, total_steps: int, flag: Flag) -> None:
        from ..training.schedule import check_fits

        check_fits(total_steps, self, flag)

    @property
    def floor_lr(self) -> float:
        return self.lr / 10 if self.min_lr is None else self.min_lr

    @property
    def wsd_fraction(self) -> float:
        return DEFAULT_DECAY_FRACTION if self.decay_fraction is None else self.decay_fraction

    @property
    def wsd_shape(self) -> str:
        return DEFAULT_DECAY_SHAPE if self.decay_shape is None else self.decay_shape

    def shape(self) -> dict:
        """The schedule's shape beyond lr, min_lr and warmup, for a run's identity: {} for cosine."""
        return {
            "cosine": {},
            "constant": {"schedule": "constant"},
            "wsd": {"schedule": "wsd", "decay_fraction": self.wsd_fraction, "decay_shape": self.wsd_shape},
        }[self.schedule]

    def total_steps(self, sequences_per_step: int, seq_len: int) -> int:
        if self.max_steps is not None:
            return self.max_steps
        return -(-self.max_tokens // (sequences_per_step * seq_len))


@dataclass(frozen=True, kw_only=True)
class Optimizer:
    """AdamW's settings besides the learning rate."""

    weight_decay: float = option(0.1, "AdamW decay on matrices, never on norms or biases", check=at_least(0))
    beta1: float = option(0.9, "AdamW beta1", check=unit_interval)
    beta2: float = option(0.95, "AdamW beta2", check=unit_interval)


@dataclass(frozen=True, kw_only=True)
class Cadence:
    """How often a run evaluates, checkpoints and logs."""

    eval_every: int = option(100, "steps between validation passes", check=at_least(1))
    eval_samples: int = option(64, "validation windows per pass, the same set at every pass", check=at_least(1))
    save_every: int = option(500, "steps between checkpoints (one is always written at the end)", check=at_least(1))
    log_every: int = option(10, "steps between metrics rows", check=at_least(1))
    # Retention is not part of a run's identity: it may change on a resume. The checkpoint `latest` names is
    # never removed (a resume and a spike rollback load it).
    keep_last: int | None = option(
        None, "keep only the newest N checkpoints (and --keep-every's)", shown_default="all", check=at_least(1)
    )
    keep_every: int | None = option(
        None,
        "with --keep-last: also keep every checkpoint whose step is a multiple of K (a multiple of --save-every)",
        check=at_least(1),
    )

    def check(self, flag: Flag) -> None:
        if self.keep_every is None:
            return
        if self.keep_last is None:
            raise ConfigError(
                f"{flag('keep_every')} {self.keep_every} keeps checkpoints that {flag('keep_last')} would remove; "
                f"without {flag('keep_last')} every checkpoint is kept"
            )
        if self.keep_every % self.save_every:
            raise ConfigError(
                f"{flag('keep_every')} {self.keep_every} is not a multiple of {flag('save_every')} "
                f"{self.save_every}: only steps that are multiples of both have checkpoints to keep"
            )


DTYPES = ("auto", "bf16", "fp32")


@dataclass(frozen=True, kw_only=True)
class DeepSpeed:
    """The DeepSpeed side of a run: its JSON knobs, the training dtype, and the device's peak for MFU."""

    ds_config: str = option(
        "zero2", "DeepSpeed JSON, or a preset: zero1, zero2, zero3, zero3_offload", metavar="JSON_OR_PRESET"
    )
    dtype: str = option("auto", "training dtype; auto is bf16 on GPU, fp32 on CPU", choices=DTYPES)
    peak_tflops: float | None = option(None, "device peak for MFU when it is not in the built-in table", check=above(0))


@dataclass(frozen=True, kw_only=True)
class Growth:
    """What grows into what, and the operator's initialisation (growth/init.py, growth/spec.py)."""

    source: str = option(help="the small model: an HF checkpoint directory", metavar="HF_DIR", hub="model")
    target: str = option(
        help="the large model's shape: an HF config.json (or a directory holding one) of the same family, at "
        "least as large everywhere",
        metavar="CONFIG",
        hub="config",
    )
    width_init: str = option(
        "select",
        "new width units: select (copies), random (convex mixes), net2net (copies, function preserving)",
        choices=WIDTH_INITS,
    )
    depth_init: str = option(
        "stack", "new layers: stack, interpolate, random, zero (new layers add nothing at first)", choices=DEPTH_INITS
    )
    # Exact copies (select / net2net without noise) get identical gradients and never diverge: a grown
    # GPT-2's copied units were still bit-identical after 400 training steps, so it kept the small model's
    # width. A little noise on the new units breaks the symmetry (Net2Net does the same).
    init_noise: float = option(
        0.01,
        "noise on new width units and depth rows; 0 gives exact copies, which never diverge in training",
        check=at_least(0),
    )
    tying: str | None = option(
        None,
        "consumers' input sides: paper (= the producer's output side) or inverse (its left inverse)",
        choices=TYINGS,
        shown_default="the width init's, else paper",
    )
    order: str = option(
        "paper", "paper (widen, then mix over depth) or official (mix, then widen per target layer)", choices=ORDERS
    )

    def check(self, flag: Flag) -> None:
        self.spec(seed=0)  # the combination rules live with GrowthSpec

    def spec(self, seed: int) -> GrowthSpec:
        return GrowthSpec(
            width_init=self.width_init,
            depth_init=self.depth_init,
            noise=self.init_noise,
            tying=self.tying,
            order=self.order,
            seed=seed,
        )


@dataclass(frozen=True, kw_only=True)
class OperatorFit:
    """Fitting the operator: only its coefficients train, with their own schedule and decay."""

    steps: int = option(
        100, "operator gradient steps; 0 writes the initialisation alone (the heuristics)", check=at_least(0)
    )
    operator_lr: float = option(1e-3, "operator peak learning rate", check=above(0))
    operator_min_lr: float | None = option(
        None, "operator cosine floor", shown_default="operator-lr / 10", check=at_least(0)
    )
    operator_warmup: int = option(10, "operator warmup steps", check=at_least(0))
    operator_weight_decay: float = option(
        0.0, "AdamW decay on the operator (decay pulls new channels towards zero)", check=at_least(0)
    )

    def check(self, flag: Flag) -> None:
        if self.operator_min_lr is not None and self.operator_min_lr > self.operator_lr:
            raise ConfigError(
                f"learning rates must satisfy 0 <= {flag('operator_min_lr')} ({self.operator_min_lr}) "
                f"<= {flag('operator_lr')} ({self.operator_lr})"
            )
        if self.steps > 0 and self.operator_warmup > self.steps:
            raise ConfigError(
                f"{flag('operator_warmup')} {self.operator_warmup} is longer than the fit ({flag('steps')} "
                f"{self.steps}): the operator's learning rate would never reach its peak"
            )

    def schedule(self) -> Schedule:
        """The fit's schedule in the shape the trainer takes (a fit of 0 steps runs no loop)."""
        return Schedule(
            max_steps=max(1, self.steps),
            lr=self.operator_lr,
            min_lr=self.operator_min_lr,
            warmup_steps=min(self.operator_warmup, max(1, self.steps)),  # a fit of 0 steps warms up nothing
        )

    def optimizer(self) -> Optimizer:
        return Optimizer(weight_decay=self.operator_weight_decay)

    # The flags behind the fit loop's lr and decay, for errors about a DeepSpeed config that disagrees.
    FLAGS = {"lr": "--operator-lr", "weight_decay": "--operator-weight-decay"}


@dataclass(frozen=True, kw_only=True)
class Health:
    """What a run does when training goes wrong (health.py): steps with a non-finite loss or gradient norm
    are skipped, loss spikes can roll the run back past the data that caused them, and data can be skipped
    by hand. None of these is part of a run's identity: they may change when a run is resumed."""

    max_bad_steps: int = option(
        5,
        "consecutive steps with a non-finite loss or gradient norm (each skipped, nothing saved) before the run "
        "stops with exit code 3",
        check=at_least(1),
    )
    spike_rollback: bool = option(
        False,
        "on a loss spike, reload the last checkpoint saved before it and skip the data from there to the spike "
        "(checkpoints wait while the loss is above the threshold)",
    )
    spike_threshold: float = option(
        6.0, "a step spikes when its loss exceeds the running mean by this many running deviations", check=above(0)
    )
    spike_window: int = option(
        100,
        "good steps in the running mean and deviation; no spike is called before there are that many",
        check=at_least(2),
    )
    spike_steps: int = option(3, "consecutive spiking steps that make a spike", check=at_least(1))
    max_rollbacks: int = option(
        3, "rollbacks to one checkpoint before the run stops with exit code 3", check=at_least(1)
    )
    skip_data: str | None = option(
        None,
        "training samples never to train on, FROM:TO[,FROM:TO...] as metrics.jsonl's samples column counts "
        "them, multiples of the global batch (grow: its training phase)",
        metavar="RANGES",
    )

    def check(self, flag: Flag) -> None:
        if self.skip_data is not None:
            from ..training.health import parse_ranges

            parse_ranges(self.skip_data, flag("skip_data"))


@dataclass(frozen=True, kw_only=True)
class Compute:
    """How the forward and backward run: memory against speed (compute.py). None of these changes the numbers
    beyond float rounding, so none is part of a run's identity: a resumed run may switch them."""

    activation_checkpointing: str = option(
        "none",
        "what each block keeps for the backward: everything (none), only its input, recomputing the block "
        "(full), or its matmul and attention outputs, recomputing norms, activations and rope (selective)",
        choices=CHECKPOINTING,
    )
    loss_chunk: int = option(
        LOSS_CHUNK,
        "tokens per chunk of the LM head and loss: no more than this many tokens' logits exist at once",
        check=at_least(1),
    )
    compile: bool = option(False, "torch.compile each block's forward (needs a C++ compiler on the CPU)")
