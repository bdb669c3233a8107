"""Evaluators: the NAS-Bench-201 table (simulator), real training, and user callables."""

from __future__ import annotations

from collm_nas.errors import UserError
from collm_nas.evaluators.base import Evaluator, TrialResult
from collm_nas.evaluators.callable import CallableEvaluator
from collm_nas.evaluators.nb201_table import DATASETS, NB201TableEvaluator, load_table
from collm_nas.evaluators.parallel import BACKENDS, EvaluatorSpec, ParallelEvaluator
from collm_nas.evaluators.seeding import current_seed, evaluation_seed
from collm_nas.spaces.nb201 import NB201Space
from collm_nas.spaces.space import SearchSpace

EVALUATORS = ("table", "train", "supernet", "proxy", "module.path:function")
# The data set a run uses when none is named (table: CIFAR-10 results; train, supernet, proxy: the handwritten digits).
DEFAULT_DATASETS = {"table": "cifar10", "train": "digits", "supernet": "digits", "proxy": "digits"}
# Evaluators that take train_options (--train-option KEY=VALUE) and a data set to train or score on.
OPTION_EVALUATORS = ("train", "supernet", "proxy")


def make_evaluator(
    kind: str,
    space: SearchSpace,
    *,
    dataset: str | None,
    table_path: str | None,
    metric: str | None = None,
    mode: str = "max",
    train_options: dict | None = None,
) -> Evaluator:
    """Build the evaluator a run asks for (``table``, ``train``, ``supernet``, ``proxy`` or ``module:function``).

    ``train_options`` configure the ``train`` evaluator (:class:`TrainConfig`
    fields: epochs, lr, channels, ...), the ``supernet`` evaluator
    (:class:`SupernetConfig`) or the ``proxy`` evaluator (:class:`ProxyConfig`),
    each with ``data_dir``.
    """
    if train_options and kind not in OPTION_EVALUATORS:
        raise UserError(f"train options ({', '.join(sorted(train_options))}) apply only to --evaluator train, "
                        "supernet or proxy")
    if kind == "table":
        if not isinstance(space, NB201Space):
            raise UserError(
                f"the table evaluator covers only the nb201 space, not '{space.name}'; "
                "use --evaluator train (real training, nb201 and mbv3) or module.path:function for your own space"
            )
        if table_path is None:
            raise UserError("no NAS-Bench-201 table configured; set --table or COLLM_NAS_NB201_TABLE")
        return NB201TableEvaluator(table_path, dataset=dataset or "cifar10", metric=metric)
    if kind == "train":
        from collm_nas.evaluators.trainer import TrainEvaluator  # imports the networks only when needed

        return TrainEvaluator(space, dataset or DEFAULT_DATASETS["train"], options=train_options,
                              metric=metric, mode=mode)
    if kind == "supernet":
        from collm_nas.evaluators.supernet import SupernetEvaluator  # two-stage: weights inherited from a supernet

        return SupernetEvaluator(space, dataset or DEFAULT_DATASETS["supernet"], options=train_options,
                                 metric=metric, mode=mode)
    if kind == "proxy":
        from collm_nas.evaluators.proxies import ProxyEvaluator  # zero-cost proxies at initialisation

        return ProxyEvaluator(space, dataset or DEFAULT_DATASETS["proxy"], options=train_options,
                              metric=metric, mode=mode)
    if ":" in kind:
        return CallableEvaluator(space, kind, metric=metric, mode=mode)
    raise UserError(f"unknown evaluator '{kind}'; use 'table', 'train', 'supernet', 'proxy' or module.path:function")


__all__ = [
    "BACKENDS",
    "DATASETS",
    "DEFAULT_DATASETS",
    "EVALUATORS",
    "OPTION_EVALUATORS",
    "CallableEvaluator",
    "Evaluator",
    "EvaluatorSpec",
    "NB201TableEvaluator",
    "ParallelEvaluator",
    "TrialResult",
    "current_seed",
    "evaluation_seed",
    "load_table",
    "make_evaluator",
]
