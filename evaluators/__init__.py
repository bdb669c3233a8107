"""Evaluators: the NAS-Bench-201 table (simulator), real training, supernet, proxies and user callables.

They are registered in :data:`EVALUATORS` (``evaluators/registry.py``); ``EVALUATORS.resolve`` builds one by name
or ``module:attribute``. Where their evaluations run (serially, on worker processes, on Ray) is the business of
:mod:`collm_nas.backends`, beside them.
"""

from __future__ import annotations

from collm_nas.core import Evaluator, Trial
from collm_nas.evaluators.callable import CallableEvaluator
from collm_nas.evaluators.nb201_table import DATASETS, NB201TableEvaluator, load_table
from collm_nas.evaluators.registry import (EVALUATORS, default_dataset, option_evaluators, reads_table, run_label,
                                           takes_options)
from collm_nas.evaluators.seeding import current_seed, evaluation_seed

__all__ = [
    "DATASETS",
    "EVALUATORS",
    "CallableEvaluator",
    "Evaluator",
    "NB201TableEvaluator",
    "Trial",
    "current_seed",
    "default_dataset",
    "evaluation_seed",
    "load_table",
    "option_evaluators",
    "reads_table",
    "run_label",
    "takes_options",
]
