"""LiGO growth: the pure math (functional.py), initialisations (init.py), what may grow into what
(spec.py), and the operator with its grown forward and materialisation (operator.py)."""

from .operator import GrownModel, LiGOOperator, grow, materialise, write_grown
from .spec import GrowthSpec, check_growable

__all__ = ["GrowthSpec", "GrownModel", "LiGOOperator", "check_growable", "grow", "materialise", "write_grown"]
