"""The Coordinator: screens proposals, tops up the batch, budgets and stops.

It owns the rules that keep a search honest whatever proposes candidates:
nothing illegal and nothing already evaluated is ever evaluated, a batch
never exceeds the budget left, and the search ends at the budget, at the
target value, or when the space has nothing new left.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

from collm_nas.agents.baselines import sample_new
from collm_nas.agents.roles import RoundContext

CheckFn = Callable[[list[str]], list[dict]]


@dataclass
class Screening:
    """What the Coordinator made of one round's proposals."""

    proposed: int = 0
    accepted: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)  # already evaluated, or twice in the proposals
    illegal: dict[str, list[str]] = field(default_factory=dict)  # code -> reasons
    topped_up: list[str] = field(default_factory=list)

    @property
    def batch(self) -> list[str]:
        return self.accepted + self.topped_up

    def figures(self) -> dict:
        return {
            "proposed": self.proposed,
            "accepted": len(self.accepted),
            "duplicates": len(self.duplicates),
            "illegal": len(self.illegal),
            "topped_up": len(self.topped_up),
            "illegal_examples": dict(list(self.illegal.items())[:5]),
        }

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class StopRule:
    budget: int
    target: float | None = None
    mode: str = "max"

    def reached_target(self, best: float | None) -> bool:
        if self.target is None or best is None:
            return False
        return best >= self.target if self.mode == "max" else best <= self.target

    def reason(self, evaluated: int, best: float | None) -> str | None:
        if evaluated >= self.budget:
            return "budget"
        if self.reached_target(best):
            return "target"
        return None


class Coordinator:
    """Screens, tops up, budgets and stops a search."""

    def __init__(self, check: CheckFn, stop: StopRule, batch_size: int) -> None:
        if batch_size < 1:
            raise ValueError("batch size must be at least 1")
        self.check = check  # the validity tool (batch of codes -> reports)
        self.stop = stop
        self.batch_size = batch_size

    def quota(self, evaluated: int) -> int:
        """How many architectures the next batch may hold."""
        return max(0, min(self.batch_size, self.stop.budget - evaluated))

    def screen(self, proposals: Sequence[str], ctx: RoundContext, quota: int) -> Screening:
        """Drop duplicates and illegal codes, keep at most ``quota``, top up the rest."""
        result = Screening(proposed=len(proposals))
        unique: list[str] = []
        for code in proposals:
            code = code.strip() if isinstance(code, str) else str(code)
            if code in ctx.history or code in unique:
                result.duplicates.append(code)
            else:
                unique.append(code)
        reports = self.check(unique) if unique else []
        for report in reports:
            if report["valid"]:
                if len(result.accepted) < quota:
                    result.accepted.append(report["ncode"])
            else:
                result.illegal[report["ncode"]] = [p["message"] for p in report["problems"]]
        missing = quota - len(result.accepted)
        if missing > 0:
            result.topped_up = sample_new(ctx, missing, ctx.rng("coordinator"), exclude=set(result.accepted))
        return result

    def stop_reason(self, evaluated: int, best: float | None, batch_was_empty: bool = False) -> str | None:
        reason = self.stop.reason(evaluated, best)
        if reason is None and batch_was_empty:
            return "exhausted"
        return reason
