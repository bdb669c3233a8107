"""Evaluators: the NAS-Bench-201 table (simulator) and user callables."""

from __future__ import annotations

from collm_nas.errors import UserError
from collm_nas.evaluators.base import Evaluator, TrialResult
from collm_nas.evaluators.callable import CallableEvaluator
from collm_nas.evaluators.nb201_table import DATASETS, NB201TableEvaluator, load_table
from collm_nas.spaces.nb201 import NB201Space
from collm_nas.spaces.space import SearchSpace

EVALUATORS = ("table", "module.path:function")


def make_evaluator(
    kind: str,
    space: SearchSpace,
    *,
    dataset: str | None,
    table_path: str | None,
    metric: str | None = None,
    mode: str = "max",
) -> Evaluator:
    """Build the evaluator a run asks for (``table`` or ``module:function``)."""
    if kind == "table":
        if not isinstance(space, NB201Space):
            raise UserError(
                f"the table evaluator covers only the nb201 space, not '{space.name}'; "
                "use --evaluator module.path:function for your own space"
            )
        if table_path is None:
            raise UserError("no NAS-Bench-201 table configured; set --table or COLLM_NAS_NB201_TABLE")
        return NB201TableEvaluator(table_path, dataset=dataset or "cifar10", metric=metric)
    if ":" in kind:
        return CallableEvaluator(space, kind, metric=metric, mode=mode)
    raise UserError(f"unknown evaluator '{kind}'; use 'table' or module.path:function")


__all__ = [
    "DATASETS",
    "EVALUATORS",
    "CallableEvaluator",
    "Evaluator",
    "NB201TableEvaluator",
    "TrialResult",
    "load_table",
    "make_evaluator",
]
