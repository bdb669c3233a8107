"""The Evaluator interface: architectures in, :class:`~collm_nas.core.trial.Trial` records out.

Optional capabilities are declared here with a default that does nothing, so
callers never probe an evaluator with ``getattr``:

* :meth:`Evaluator.prepare`: check what the evaluator needs before a search
  starts (data present, a supernet trained); a one-line ``UserError`` if not;
* :attr:`Evaluator.resource_names` / :meth:`Evaluator.resources`: figures
  known before evaluation (parameters, FLOPs, latency), for constraints;
* :meth:`Evaluator.estimate_cost`: the expected spend of one evaluation
  (``*_s`` seconds), for the approval gate;
* :attr:`Evaluator.reference_columns` / :meth:`Evaluator.reference_values`:
  other measurements of the whole space (a tabular benchmark's other
  datasets), which warm-start learned rankers (``--prior table:COLUMN``);
* :attr:`Evaluator.metric_names` / :meth:`Evaluator.want_metrics`: the
  metrics a trial can carry, checked before a multi-objective search starts,
  and asking for those beyond the usual ones (a table's latency columns).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import ClassVar, Literal

from collm_nas.core.objective import Direction, Objective
from collm_nas.core.trial import Trial


class Evaluator(ABC):
    """Evaluates architectures of one search space.

    ``searched_metric`` is what the search maximises (or minimises, per
    ``mode``); ``reported_metric`` is what results are quoted in.
    ``metric_note`` says in one sentence how the two relate.
    """

    name: str = "evaluator"
    searched_metric: str
    reported_metric: str
    mode: Literal["max", "min"] = "max"
    metric_note: str = ""
    # True when results depend on nothing random (a lookup table): no seeding needed.
    deterministic: ClassVar[bool] = False

    @property
    def objective(self) -> Objective:
        return Objective(self.searched_metric, Direction.of(self.mode))

    @abstractmethod
    def evaluate(self, ncodes: Sequence[str]) -> list[Trial]:
        """Evaluate a batch; one trial per code, in order. Never raises for one bad code."""

    def iter_evaluate(self, ncodes: Sequence[str]) -> Iterator[Trial]:
        """Results as they become available (costly evaluators override this)."""
        yield from self.evaluate(ncodes)

    def close(self) -> None:
        """Release what the evaluator holds (worker processes, files); it may be used again after."""

    # ------------------------------------------------------ optional capabilities
    def prepare(self) -> None:
        """Check (or make) what evaluations need before a search starts; one-line UserError if impossible."""

    def problem(self, ncode: str) -> str | None:
        """Why this evaluator cannot evaluate the legal code ``ncode`` (None: it can). The validity checker
        treats such a code as illegal, so no strategy proposes it (a table of a subset of the cells)."""
        return None

    @property
    def resource_names(self) -> tuple[str, ...]:
        """Resources known before evaluation (used by constraints and cost estimates)."""
        return ()

    def resources(self, ncode: str) -> dict[str, float]:
        return {}

    def estimate_cost(self, ncode: str) -> dict[str, float]:
        """Expected cost of evaluating ``ncode`` (``*_s`` seconds; empty when unknown)."""
        return {}

    @property
    def reference_columns(self) -> tuple[str, ...]:
        """Names of other whole-space measurements this evaluator holds (none by default)."""
        return ()

    def reference_values(self, column: str) -> dict[str, float]:
        """``{ncode: value}`` of one reference column over the whole space."""
        raise KeyError(column)

    @property
    def metric_names(self) -> tuple[str, ...]:
        """Every metric a trial of this evaluator can carry (empty: known only from its trials, e.g. a
        user's function; a missing objective then fails that trial)."""
        return ()

    def want_metrics(self, names: Sequence[str]) -> None:
        """Return these metrics in every trial from now on (objectives beyond the usual metrics).

        The default does nothing: such an evaluator returns what it returns.
        """
