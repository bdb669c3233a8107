"""The evaluator registry: ``--evaluator NAME`` or ``--evaluator module.path:attribute``.

Every factory is called the same way::

    factory(space, dataset=..., table_path=..., metric=..., mode=..., options={...})

and returns an :class:`~collm_nas.core.Evaluator`. From outside the package,
``module:function`` is a function that scores a decoded architecture
(:class:`~collm_nas.evaluators.callable.CallableEvaluator` wraps it) and
``module:Class`` an Evaluator subclass, built with the call above.

Entry facts (``info``): ``dataset`` (the default data set), ``options``
(whether it takes ``--train-option`` settings) and ``label`` (what a run id
names besides the strategy: ``dataset``, ``space-dataset`` or ``space``).
"""

from __future__ import annotations

import inspect
from typing import Any

from collm_nas.core import Evaluator, Registry, SearchSpace, UserError, import_attribute

EVALUATORS: Registry[Evaluator] = Registry("evaluator", external_hint="module.path:function (or :EvaluatorClass)")


@EVALUATORS.register("table", help="NAS-Bench-201 results looked up in the table", dataset="cifar10",
                     label="dataset", options=False)
def _table(space: SearchSpace, *, dataset: str | None, table_path: str | None, metric: str | None = None,
           mode: str = "max", options: dict | None = None) -> Evaluator:
    from collm_nas.evaluators.nb201_table import NB201TableEvaluator
    from collm_nas.spaces.nb201 import NB201Space

    if not isinstance(space, NB201Space):
        raise UserError(
            f"the table evaluator covers only the nb201 space, not '{space.name}'; "
            "use --evaluator train (real training, nb201 and mbv3) or module.path:function for your own space")
    if table_path is None:
        raise UserError("no NAS-Bench-201 table configured; set --table or COLLM_NAS_NB201_TABLE")
    return NB201TableEvaluator(table_path, dataset=dataset or "cifar10", metric=metric, mode=mode)


@EVALUATORS.register("train", help="real training of every architecture (nb201, mbv3)", dataset="digits",
                     label="space-dataset", options=True)
def _train(space: SearchSpace, *, dataset: str | None, table_path: str | None = None, metric: str | None = None,
           mode: str = "max", options: dict | None = None) -> Evaluator:
    from collm_nas.evaluators.trainer import TrainEvaluator  # imports the networks only when needed

    return TrainEvaluator(space, dataset or "digits", options=options, metric=metric, mode=mode)


@EVALUATORS.register("supernet", help="nb201 weights inherited from a supernet trained once", dataset="digits",
                     label="space-dataset", options=True)
def _supernet(space: SearchSpace, *, dataset: str | None, table_path: str | None = None,
              metric: str | None = None, mode: str = "max", options: dict | None = None) -> Evaluator:
    from collm_nas.evaluators.supernet import SupernetEvaluator

    return SupernetEvaluator(space, dataset or "digits", options=options, metric=metric, mode=mode)


@EVALUATORS.register("proxy", help="nb201 zero-cost proxies: synflow, naswot, grad_norm", dataset="digits",
                     label="space-dataset", options=True)
def _proxy(space: SearchSpace, *, dataset: str | None, table_path: str | None = None, metric: str | None = None,
           mode: str = "max", options: dict | None = None) -> Evaluator:
    from collm_nas.evaluators.proxies import ProxyEvaluator

    return ProxyEvaluator(space, dataset or "digits", options=options, metric=metric, mode=mode)


def make_evaluator(name: str, space: SearchSpace, *, dataset: str | None = None, table_path: str | None = None,
                   metric: str | None = None, mode: str = "max", train_options: dict | None = None) -> Evaluator:
    """Build the evaluator a run asks for: a registered name or ``module:attribute``."""
    options = dict(train_options or {})
    takers = option_evaluators()
    refuse = UserError(f"train options ({', '.join(sorted(options))}) apply only to --evaluator "
                       f"{', '.join(takers[:-1])} or {takers[-1]} (or your own Evaluator class)")
    if options and name in EVALUATORS and not takes_options(name):
        raise refuse
    if EVALUATORS.is_external(name) and name not in EVALUATORS:
        target = import_attribute(name, "evaluator")
        if inspect.isclass(target) and issubclass(target, Evaluator):
            return target(space, dataset=dataset, table_path=table_path, metric=metric, mode=mode,
                          options=options)
        if isinstance(target, Evaluator):
            return target
        from collm_nas.evaluators.callable import CallableEvaluator

        if not callable(target):
            module, _, attr = name.partition(":")
            raise UserError(f"'{attr}' in module '{module}' is not a function or an Evaluator class")
        if options:
            raise refuse
        return CallableEvaluator(space, target, metric=metric, mode=mode, target=name)
    factory = EVALUATORS.factory(name)
    return factory(space, dataset=dataset, table_path=table_path, metric=metric, mode=mode, options=options)


def option_evaluators() -> list[str]:
    return [n for n in EVALUATORS if EVALUATORS.info(n, "options")]


def takes_options(name: str) -> bool:
    """Whether the evaluator takes ``--train-option`` settings (a user's own evaluator class may)."""
    return bool(EVALUATORS.info(name, "options", default=EVALUATORS.is_external(name)))


def default_dataset(name: str) -> str | None:
    return EVALUATORS.info(name, "dataset")


def run_label(evaluator: str, space: str, dataset: str | None) -> str:
    """What a run id names besides its strategy: the table's dataset, the space and dataset trained on, or the space."""
    from pathlib import Path

    label = EVALUATORS.info(evaluator, "label", "space")
    dataset = dataset or default_dataset(evaluator)
    if label == "dataset":
        return dataset or "run"
    if label == "space-dataset":
        from collm_nas.evaluators.datasets import dataset_label

        return f"{Path(space).stem}-{dataset_label(dataset)}" if dataset else Path(space).stem
    return Path(space).stem if not EVALUATORS.is_external(space) else space.rpartition(":")[2]


__all__ = ["EVALUATORS", "default_dataset", "make_evaluator", "option_evaluators", "run_label", "takes_options"]
