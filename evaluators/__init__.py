"""Evaluators: the NAS-Bench-201 table (simulator), real training, supernet, proxies and user callables.

They are registered in :data:`EVALUATORS` (``evaluators/registry.py``); ``make_evaluator`` builds one by name or
``module:attribute``.
"""

from __future__ import annotations

from collm_nas.core import Evaluator, Trial
from collm_nas.evaluators.callable import CallableEvaluator
from collm_nas.evaluators.nb201_table import DATASETS, NB201TableEvaluator, load_table
from collm_nas.evaluators.parallel import BACKENDS, EvaluatorSpec, ParallelEvaluator
from collm_nas.evaluators.registry import (EVALUATORS, default_dataset, make_evaluator, option_evaluators,
                                           run_label, takes_options)
from collm_nas.evaluators.seeding import current_seed, evaluation_seed

__all__ = [
    "BACKENDS",
    "DATASETS",
    "EVALUATORS",
    "CallableEvaluator",
    "Evaluator",
    "EvaluatorSpec",
    "NB201TableEvaluator",
    "ParallelEvaluator",
    "Trial",
    "current_seed",
    "default_dataset",
    "evaluation_seed",
    "load_table",
    "make_evaluator",
    "option_evaluators",
    "run_label",
    "takes_options",
]
