"""The Evaluator interface: architectures in, metrics and costs out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal


@dataclass
class TrialResult:
    """What evaluating one architecture produced."""

    ncode: str
    arch: str
    metrics: dict[str, float] = field(default_factory=dict)
    cost: dict[str, float] = field(default_factory=dict)
    status: Literal["ok", "failed"] = "ok"
    error: str | None = None


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
    deterministic: bool = False

    @abstractmethod
    def evaluate(self, ncodes: Sequence[str]) -> list[TrialResult]:
        """Evaluate a batch; one result per code, in order. Never raises for one bad code."""

    def iter_evaluate(self, ncodes: Sequence[str]) -> Iterator[TrialResult]:
        """Results as they become available (costly evaluators override this)."""
        yield from self.evaluate(ncodes)

    def close(self) -> None:
        """Release what the evaluator holds (worker processes, files); it may be used again after."""

    # Resources known before evaluation (used by constraints and cost estimates).
    @property
    def resource_names(self) -> tuple[str, ...]:
        return ()

    def resources(self, ncode: str) -> dict[str, float]:
        return {}

    def estimate_cost(self, ncode: str) -> dict[str, float]:
        """Expected cost of evaluating ``ncode`` (empty when unknown)."""
        return {}

    def better(self, a: float, b: float | None) -> bool:
        """Whether value ``a`` beats ``b`` (``None`` is beaten by anything)."""
        if b is None:
            return True
        return a > b if self.mode == "max" else a < b
