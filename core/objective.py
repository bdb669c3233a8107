"""What a search optimises: a metric and a direction, and the comparison that goes with them.

"Is a better than b" is answered here and nowhere else: :class:`Direction`
compares values, :class:`Objective` compares trials, :class:`SearchGoal` is
the objective in the words an LLM prompt uses (budget, constraints, note).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum

from collm_nas.core.errors import UserError
from collm_nas.core.trial import Trial


class Direction(str, Enum):
    """Whether larger or smaller values of a metric are better."""

    MAX = "max"
    MIN = "min"

    @classmethod
    def of(cls, value: "str | Direction") -> "Direction":
        try:
            return cls(value.value if isinstance(value, Direction) else str(value).strip().lower())
        except ValueError:
            raise UserError(f"unknown direction '{value}'; use max or min") from None

    def better(self, a: float | None, b: float | None) -> bool:
        """Whether ``a`` beats ``b`` strictly (anything beats None; None beats nothing)."""
        if a is None:
            return False
        if b is None:
            return True
        return a > b if self is Direction.MAX else a < b

    def at_least_as_good(self, a: float, bound: float) -> bool:
        """Whether ``a`` reaches ``bound`` (a target value)."""
        return a >= bound if self is Direction.MAX else a <= bound

    def sign(self) -> float:
        """+1 for max, -1 for min: ``sign * value`` is larger-is-better."""
        return 1.0 if self is Direction.MAX else -1.0

    def best(self, values: Iterable[float]) -> float | None:
        values = list(values)
        if not values:
            return None
        return max(values) if self is Direction.MAX else min(values)


@dataclass(frozen=True)
class Objective:
    """One metric and its direction."""

    metric: str
    direction: Direction = Direction.MAX

    def __post_init__(self) -> None:
        object.__setattr__(self, "direction", Direction.of(self.direction))

    @property
    def mode(self) -> str:
        return self.direction.value

    def value(self, trial: Trial) -> float | None:
        """The trial's value of this metric (None when it failed or lacks it)."""
        if trial.status != "ok":
            return None
        return trial.metric(self.metric)

    def better(self, a: Trial, b: Trial | None) -> bool:
        """Whether trial ``a`` beats trial ``b`` on this objective (by their recorded values)."""
        return self.direction.better(a.value if a.ok else None, b.value if b is not None and b.ok else None)

    def best(self, trials: Iterable[Trial]) -> Trial | None:
        """The best successful trial (the first of equals)."""
        best: Trial | None = None
        for t in trials:
            if t.ok and self.better(t, best):
                best = t
        return best

    def ranked(self, trials: Iterable[Trial]) -> list[Trial]:
        """Successful trials, best first (stable among equals)."""
        ok = [t for t in trials if t.ok]
        ok.sort(key=lambda t: -self.direction.sign() * float(t.value))  # type: ignore[arg-type]
        return ok

    def reached(self, value: float | None, target: float | None) -> bool:
        return value is not None and target is not None and self.direction.at_least_as_good(value, target)


@dataclass(frozen=True)
class SearchGoal:
    """The objective of a run in words an LLM prompt can use."""

    objective: Objective
    budget: int
    note: str = ""  # e.g. "searched on cifar10_valid, reported on cifar10_test"
    constraints: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()  # resource figures a trial carries (params_mb, ...)

    @property
    def metric(self) -> str:
        return self.objective.metric

    @property
    def mode(self) -> str:
        return self.objective.mode


def stale_rounds(trials: Sequence[Trial], best: Trial | None) -> int:
    """Rounds that evaluated something since the best trial's round (a rejected round evaluates nothing)."""
    after = best.round if best is not None else 0
    return len({t.round for t in trials if t.round > after})
