"""Evaluate with a user's Python function: ``--evaluator mypkg.module:function``.

The function receives the decoded architecture (``{decision: option}``) and
returns either a number (the searched metric) or a mapping of metrics that
includes the searched one. Exceptions become failed trials, not crashes.
A function with a ``seed`` parameter also gets the evaluation's seed (from
the run seed and the NCode only; see :mod:`collm_nas.evaluators.seeding`).
"""

from __future__ import annotations

import inspect
import math
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from collm_nas.core import UserError, import_attribute
from collm_nas.core import Evaluator, Trial
from collm_nas.evaluators.seeding import current_seed, evaluation_seed
from collm_nas.core.space import SearchSpace


def import_callable(target: str) -> Callable[..., Any]:
    """The user's ``module.path:function``; one-line errors for a bad target."""
    fn = import_attribute(target, "evaluator", expects="function")
    if not callable(fn):
        module_name, _, attr = target.partition(":")
        raise UserError(f"'{attr}' in module '{module_name}' is not a function")
    return fn


class CallableEvaluator(Evaluator):
    name = "callable"

    def __init__(
        self,
        space: SearchSpace,
        fn: Callable[[dict[str, str]], float | Mapping[str, float]] | str,
        metric: str | None = None,
        mode: str = "max",
        target: str | None = None,
    ) -> None:
        self.space = space
        self.target = target or (fn if isinstance(fn, str) else f"{fn.__module__}:{fn.__qualname__}")
        self.fn = import_callable(fn) if isinstance(fn, str) else fn
        self.takes_seed = _has_seed_parameter(self.fn)
        self.searched_metric = metric or "score"
        self.reported_metric = self.searched_metric
        if mode not in ("max", "min"):
            raise UserError(f"unknown mode '{mode}'; use max or min")
        self.mode = mode  # type: ignore[assignment]
        self.metric_note = f"searched and reported on '{self.searched_metric}' returned by {self.target}"

    @property
    def resource_names(self) -> tuple[str, ...]:
        return tuple(sorted(self.space.cost_names))

    def resources(self, ncode: str) -> dict[str, float]:
        return self.space.costs(ncode)

    def evaluate(self, ncodes: Sequence[str]) -> list[Trial]:
        return list(self.iter_evaluate(ncodes))

    def iter_evaluate(self, ncodes: Sequence[str]):
        for code in ncodes:
            start = time.perf_counter()
            arch = code
            try:
                arch = self.space.format_arch(code)
                if self.takes_seed:
                    seed = current_seed()
                    value = self.fn(self.space.decode(code), seed=evaluation_seed(0, code) if seed is None else seed)
                else:
                    value = self.fn(self.space.decode(code))
                metrics = dict(value) if isinstance(value, Mapping) else {self.searched_metric: value}
                metrics = {k: float(v) for k, v in metrics.items()}
                if not math.isfinite(metrics.get(self.searched_metric, math.nan)):
                    raise ValueError(f"returned no finite '{self.searched_metric}'")
            except Exception as e:  # a failing user function fails one trial
                last = traceback.format_exception_only(type(e), e)[-1].strip()
                yield Trial(code, arch, status="failed", error=last,
                                  cost={"wall_s": time.perf_counter() - start})
                continue
            yield Trial(code, arch, metrics=metrics, cost={"wall_s": time.perf_counter() - start})


def _has_seed_parameter(fn: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins and some C callables have no signature
        return False
    seed = parameters.get("seed")
    return seed is not None and seed.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
