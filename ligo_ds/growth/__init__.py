"""LiGO growth: the operator, its fit, and growing in one job.

functional.py  the pure math: expand over width, mix over depth, head-structured expansion
init.py        the initialisations (registries): the classic heuristics as special cases
spec.py        what may grow into what (the Growth block, GrowthSpec, check_growable)
layout.py      which expansion acts on which side of which weight: tables
rotary.py      where a head's dims go when head_dim grows: each RoPE pair on the pair of its frequency
parts.py       the operator's modules: frozen source layers, width expansions, depth mixing
operator.py    LiGOOperator: source weights + coefficients -> the target's weights
grown.py       the grown model's forward (the fit's) and its weights streamed out
cost.py        what the operator costs per fit step
fit.py         the fit (FitOptions, the OperatorFit block), a job of the run pipeline (fit_job.py)
grow.py        grow (GrowOptions): fit -> hand-off -> pretraining
"""

from .grown import GrownModel, iter_grown_state, materialise, write_grown
from .operator import LiGOOperator, meta_operator, operator_from
from .spec import GrowthSpec, check_growable

__all__ = [
    "meta_operator",
    "GrowthSpec",
    "GrownModel",
    "LiGOOperator",
    "check_growable",
    "iter_grown_state",
    "materialise",
    "operator_from",
    "write_grown",
]
