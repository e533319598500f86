"""LiGO growth: the pure math (functional.py), the initialisations (init.py: registries), what may grow
into what and how (spec.py), which expansion acts where (layout.py), the operator's modules
(operator.py), and the grown model's forward and materialisation (grown.py)."""

from .grown import GrownModel, iter_grown_state, materialise, write_grown
from .operator import LiGOOperator, grow, meta_operator
from .spec import GrowthSpec, check_growable

__all__ = [
    "meta_operator",
    "GrowthSpec",
    "GrownModel",
    "LiGOOperator",
    "check_growable",
    "grow",
    "iter_grown_state",
    "materialise",
    "write_grown",
]
