"""The evaluator registry: ``--evaluator NAME`` or ``--evaluator module.path:attribute``.

Every evaluator is built the same way::

    EVALUATORS.resolve(name, space, dataset=..., metric=..., mode=..., options={...})

and is an :class:`~collm_nas.core.Evaluator`. ``options`` are the evaluator's own settings (``--train-option``;
the table evaluator's one option is ``table``, the table file, which the engine fills in from ``--table`` /
``COLLM_NAS_NB201_TABLE``). From outside the package, ``module:function`` is a function that scores a decoded
architecture (:class:`~collm_nas.evaluators.callable.CallableEvaluator` wraps it) and ``module:Class`` an
Evaluator subclass, built with the keywords above.

Entry facts (``info``): ``dataset`` (the default data set), ``options``
(whether it takes ``--train-option`` settings) and ``label`` (what a run id
names besides the strategy: ``dataset``, ``space-dataset`` or ``space``).
"""

from __future__ import annotations

import inspect
from typing import Any

from collm_nas.core import Evaluator, Registry, SearchSpace, UserError, import_attribute

def _refuse_options(name: str, options: dict) -> UserError:
    takers = option_evaluators()
    return UserError(f"train options ({', '.join(sorted(options))}) apply only to --evaluator "
                     f"{', '.join(takers[:-1])} or {takers[-1]} (or your own Evaluator class), not to {name}")


def _adapt(value: Any, name: str, space: SearchSpace, *, dataset: str | None = None, metric: str | None = None,
           mode: str = "max", options: dict | None = None) -> Evaluator:
    """What ``module:attribute`` names, as an evaluator: a class built the common way, an instance, or a
    function scoring a decoded architecture."""
    options = dict(options or {})
    if inspect.isclass(value) and issubclass(value, Evaluator):
        return value(space, dataset=dataset, metric=metric, mode=mode, options=options)
    if options:
        raise _refuse_options(name, options)
    if isinstance(value, Evaluator):
        return value
    if not callable(value):
        module, _, attr = name.partition(":")
        raise UserError(f"'{attr}' in module '{module}' is not a function or an Evaluator class")
    from collm_nas.evaluators.callable import CallableEvaluator

    return CallableEvaluator(space, value, metric=metric, mode=mode, target=name)


EVALUATORS: Registry[Evaluator] = Registry("evaluator", external_hint="module.path:function (or :EvaluatorClass)",
                                           adapt=_adapt)


@EVALUATORS.register("table", help="NAS-Bench-201 results looked up in the table", dataset="cifar10",
                     label="dataset", options=False, reads_table=True)
def _table(space: SearchSpace, *, dataset: str | None = None, metric: str | None = None, mode: str = "max",
           options: dict | None = None) -> Evaluator:
    from collm_nas.evaluators.nb201_table import NB201TableEvaluator
    from collm_nas.spaces.nb201 import NB201Space

    options = dict(options or {})
    table = options.pop("table", None)
    if options:
        raise _refuse_options("table", options)
    if not isinstance(space, NB201Space):
        raise UserError(
            f"the table evaluator covers only the nb201 space, not '{space.name}'; "
            "use --evaluator train (real training, nb201 and mbv3) or module.path:function for your own space")
    if table is None:
        raise UserError("no NAS-Bench-201 table configured; set --table or COLLM_NAS_NB201_TABLE")
    return NB201TableEvaluator(table, dataset=dataset or "cifar10", metric=metric, mode=mode)


@EVALUATORS.register("train", help="real training of every architecture (nb201, mbv3)", dataset="digits",
                     label="space-dataset", options=True)
def _train(space: SearchSpace, *, dataset: str | None = None, metric: str | None = None, mode: str = "max",
           options: dict | None = None) -> Evaluator:
    from collm_nas.evaluators.trainer import TrainEvaluator  # imports the networks only when needed

    return TrainEvaluator(space, dataset or "digits", options=options, metric=metric, mode=mode)


@EVALUATORS.register("supernet", help="nb201 weights inherited from a supernet trained once", dataset="digits",
                     label="space-dataset", options=True)
def _supernet(space: SearchSpace, *, dataset: str | None = None, metric: str | None = None, mode: str = "max",
              options: dict | None = None) -> Evaluator:
    from collm_nas.evaluators.supernet import SupernetEvaluator

    return SupernetEvaluator(space, dataset or "digits", options=options, metric=metric, mode=mode)


@EVALUATORS.register("proxy", help="nb201 zero-cost proxies: synflow, naswot, grad_norm", dataset="digits",
                     label="space-dataset", options=True)
def _proxy(space: SearchSpace, *, dataset: str | None = None, metric: str | None = None, mode: str = "max",
           options: dict | None = None) -> Evaluator:
    from collm_nas.evaluators.proxies import ProxyEvaluator

    return ProxyEvaluator(space, dataset or "digits", options=options, metric=metric, mode=mode)


def reads_table(name: str) -> bool:
    """Whether the evaluator looks results up in a table (``--table`` / ``COLLM_NAS_NB201_TABLE``)."""
    return bool(EVALUATORS.info(name, "reads_table", False))


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


__all__ = ["EVALUATORS", "default_dataset", "option_evaluators", "reads_table", "run_label", "takes_options"]
