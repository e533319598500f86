"""Every option of every command, declared once (declare.py: the machinery; blocks.py: what pretrain,
fit and grow share; commands.py: each command's options)."""

from .blocks import Cadence, Compute, Data, DeepSpeed, Growth, Health, Loop, OperatorFit, Optimizer, Schedule
from .commands import (
    EvalOptions,
    ExportOptions,
    FitOptions,
    GrowOptions,
    InspectOptions,
    PlanOptions,
    PrepareOptions,
    PretrainOptions,
    ReportOptions,
)
from .declare import add_arguments, flat_options, from_args, from_values, load_json, resolve_paths, to_args, to_flat

__all__ = [
    "Cadence",
    "Compute",
    "Data",
    "DeepSpeed",
    "EvalOptions",
    "ExportOptions",
    "FitOptions",
    "GrowOptions",
    "Growth",
    "Health",
    "InspectOptions",
    "Loop",
    "PlanOptions",
    "OperatorFit",
    "Optimizer",
    "PrepareOptions",
    "PretrainOptions",
    "ReportOptions",
    "Schedule",
    "add_arguments",
    "flat_options",
    "from_args",
    "from_values",
    "load_json",
    "resolve_paths",
    "to_args",
    "to_flat",
]
