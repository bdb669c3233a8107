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
from collm_nas.core.pareto import hypervolume, non_dominated
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


def parse_objective(text: str) -> Objective:
    """``NAME:max`` or ``NAME:min`` (``NAME`` alone: max) as an :class:`Objective`; a one-line error else."""
    name, _, direction = str(text).strip().partition(":")
    name = name.strip()
    if not name:
        raise UserError(f"objective '{text}' names no metric; write NAME:max or NAME:min, e.g. cifar10_valid:max")
    if direction.strip().lower() not in ("", "max", "min"):
        raise UserError(f"objective '{text}': the direction must be max or min, not '{direction.strip()}'; "
                        "write NAME:max or NAME:min")
    return Objective(name, direction.strip().lower() or "max")


@dataclass(frozen=True)
class Objectives:
    """Two or three objectives searched together: their points, dominance, the front and its hypervolume.

    A point is the trial's metrics in larger-is-better form (minimised
    metrics negated), the form :mod:`collm_nas.core.pareto` works in; a
    reference point is given in the metrics' own units and converted the same
    way.
    """

    items: tuple[Objective, ...]

    def __post_init__(self) -> None:
        names = [o.metric for o in self.items]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise UserError(f"objective {twice[0]} is given twice; name each metric once")
        if not 1 <= len(self.items) <= 3:
            raise UserError(f"give one to three objectives, not {len(self.items)}")

    @classmethod
    def parse(cls, texts: Sequence[str]) -> "Objectives":
        return cls(tuple(parse_objective(t) for t in texts))

    @property
    def metrics(self) -> tuple[str, ...]:
        return tuple(o.metric for o in self.items)

    def __len__(self) -> int:
        return len(self.items)

    def specs(self) -> list[str]:
        """The objectives as ``NAME:max|min`` strings (what a run stores)."""
        return [f"{o.metric}:{o.mode}" for o in self.items]

    def missing(self, trial: Trial) -> list[str]:
        """The objectives a trial lacks among its metrics and costs (or holds as something other than a number)."""
        out = []
        for name in self.metrics:
            value = trial.metric(name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
                out.append(name)
        return out

    def point(self, trial: Trial) -> tuple[float, ...] | None:
        """The trial in larger-is-better form (None when it failed or lacks an objective)."""
        if trial.status != "ok":
            return None
        values = [trial.metric(o.metric) for o in self.items]
        if any(v is None for v in values):
            return None
        return tuple(o.direction.sign() * float(v) for o, v in zip(self.items, values))  # type: ignore[arg-type]

    def signed(self, values: Sequence[float]) -> tuple[float, ...]:
        """Metric values (one per objective, own units) in larger-is-better form."""
        return tuple(o.direction.sign() * float(v) for o, v in zip(self.items, values, strict=True))

    def front(self, trials: Iterable[Trial]) -> list[Trial]:
        """The trials no other trial dominates, in evaluation order (equal ones all stay)."""
        scored = [(t, p) for t in trials if (p := self.point(t)) is not None]
        return [scored[i][0] for i in non_dominated([p for _, p in scored])]

    def hypervolume(self, trials: Iterable[Trial], reference: Sequence[float]) -> float:
        """The hypervolume of the trials' front against ``reference`` (metric units)."""
        points = [p for t in trials if (p := self.point(t)) is not None]
        return hypervolume(points, self.signed(reference))

    def default_reference(self, trials: Iterable[Trial]) -> tuple[float, ...] | None:
        """Each objective's worst value among the trials, moved a tenth of its range further (metric units),
        so that the ends of the front count; None without a successful trial."""
        points = [p for t in trials if (p := self.point(t)) is not None]
        if not points:
            return None
        out = []
        for k, objective in enumerate(self.items):
            worst, best = min(p[k] for p in points), max(p[k] for p in points)
            margin = (best - worst) / 10 or max(abs(worst) / 100, 1e-9)
            out.append(objective.direction.sign() * (worst - margin))
        return tuple(out)

    def summary(self, trials: Sequence[Trial], reference: Sequence[float] | None = None) -> "FrontSummary":
        """The trials' front, its hypervolume and the reference point used (``reference``: the default)."""
        if reference is not None and len(reference) != len(self.items):
            raise UserError(f"the hypervolume reference needs {len(self.items)} values, one per objective "
                            f"({', '.join(self.specs())}), not {len(reference)}")
        given = reference is not None
        reference = tuple(float(r) for r in reference) if reference is not None else self.default_reference(trials)
        front = self.front(trials)
        volume = self.hypervolume(trials, reference) if reference is not None else 0.0
        return FrontSummary(self.specs(), front, volume, reference,
                            "given" if given else "worst value of each objective moved a tenth of its range "
                            "further")


@dataclass(frozen=True)
class FrontSummary:
    """A run's Pareto front: the trials no other dominates, their hypervolume and its reference point."""

    objectives: list[str]
    front: list[Trial]
    hypervolume: float
    reference: tuple[float, ...] | None
    reference_rule: str


@dataclass(frozen=True)
class SearchGoal:
    """The objective of a run in words an LLM prompt can use."""

    objective: Objective
    budget: int
    note: str = ""  # e.g. "searched on cifar10_valid, reported on cifar10_test"
    constraints: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()  # resource figures a trial carries (params_mb, ...)
    objectives: tuple[Objective, ...] = ()  # several: the run searches their Pareto front

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
