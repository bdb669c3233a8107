"""One trial: an architecture, what evaluating it produced, and where the run recorded it.

The same record travels the whole way: an evaluator returns it (``round``,
``value``, ``seq`` and ``created_at`` still unset), the trial store records it
(:meth:`Trial.recorded` fills them in) and the strategies read it back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, Protocol

TrialStatus = Literal["ok", "failed"]


@dataclass(frozen=True)
class Trial:
    """One evaluated architecture."""

    ncode: str
    arch: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    cost: dict[str, float] = field(default_factory=dict)  # seconds and other spend (train_s, wall_s, ...)
    status: TrialStatus = "ok"
    error: str | None = None  # one line, for a failed trial
    # Set when the run records the trial.
    round: int = 0
    value: float | None = None  # the searched metric (None for a failed trial)
    seq: int = 0  # evaluation order within the store
    created_at: float = 0.0

    @property
    def ok(self) -> bool:
        """A successful trial with a value of the searched metric."""
        return self.status == "ok" and self.value is not None

    @classmethod
    def failed(cls, ncode: str, arch: str = "", error: str = "failed", cost: dict[str, float] | None = None) -> "Trial":
        return cls(ncode, arch or ncode, status="failed", error=" ".join(str(error).split()), cost=dict(cost or {}))

    def recorded(self, *, round: int, value: float | None, seq: int = 0, created_at: float = 0.0) -> "Trial":
        """This trial as a run records it (round, searched value, order)."""
        return replace(self, round=round, value=value if self.status == "ok" else None, seq=seq,
                       created_at=created_at)

    def metric(self, name: str) -> float | None:
        """A metric, or a resource / cost figure of the same name (``params_mb``, ``train_s``...)."""
        if name in self.metrics:
            return self.metrics[name]
        return self.cost.get(name)


class History(Protocol):
    """Read-only view of one run's trials, in evaluation order."""

    def trials(self) -> Sequence[Trial]: ...

    def __contains__(self, ncode: object) -> bool: ...

    def __len__(self) -> int: ...

    def get(self, ncode: str) -> Trial | None: ...

    def best(self) -> Trial | None: ...

    def in_round(self, round_no: int) -> list[Trial]: ...
