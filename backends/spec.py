"""What a backend needs to evaluate anywhere: how to build the run's evaluator, and one seeded evaluation.

An :class:`EvaluatorSpec` is picklable (it crosses to worker processes and Ray tasks); each worker builds its
own copy of the evaluator from it once. :func:`evaluate_one` runs one code under its own seed, made from the
run seed and the NCode only, so every backend gives the same result for it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from collm_nas.core import Evaluator, SearchSpace, Trial, UserError
from collm_nas.evaluators.seeding import evaluation_seed, seeded


@dataclasses.dataclass
class EvaluatorSpec:
    """``EVALUATORS.resolve(kind, space, dataset=..., metric=..., mode=..., options=...)``, plus the run seed
    and the metrics every trial must carry besides the usual (the run's objectives)."""

    kind: str
    space: SearchSpace
    dataset: str | None = None
    metric: str | None = None
    mode: str = "max"
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    seed: int = 0
    metrics: tuple[str, ...] = ()

    def build(self) -> Evaluator:
        from collm_nas.evaluators import EVALUATORS

        evaluator = EVALUATORS.resolve(self.kind, self.space, dataset=self.dataset, metric=self.metric,
                                       mode=self.mode, options=dict(self.options))
        if self.metrics:
            evaluator.want_metrics(self.metrics)
        return evaluator


def one_line(text: str, limit: int = 400) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def failed_trial(code: str, space: SearchSpace | None, error: str) -> Trial:
    try:
        arch = space.format_arch(code) if space is not None else code
    except Exception:  # a malformed code is reported by the evaluator, not here
        arch = code
    return Trial(code, arch, status="failed", error=one_line(error))


def evaluate_one(evaluator: Evaluator, code: str, run_seed: int, *, space: SearchSpace | None = None,
                 restore: bool = True) -> Trial:
    """Evaluate one code under its own seed; anything but a UserError fails just this trial."""
    libraries = not evaluator.deterministic
    with seeded(evaluation_seed(run_seed, code), libraries=libraries, restore=restore):
        try:
            results = list(evaluator.evaluate([code]))
        except UserError:
            raise
        except Exception as e:
            return failed_trial(code, space, f"{type(e).__name__}: {e}")
    if len(results) != 1 or results[0].ncode != code:
        return failed_trial(code, space, f"the evaluator answered {len(results)} result(s) for code {code}")
    return results[0]
