"""The three roles of a search round, as interfaces.

* a :class:`Navigator` reads the history and writes a :class:`Strategy`;
* a :class:`Generator` turns a strategy into candidate NCodes;
* the Coordinator (``coordinator.py``) screens, tops up, budgets and stops.

LLM-free implementations live in ``baselines.py``; LLM ones plug in behind
the same two methods.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from pydantic import BaseModel, Field

from collm_nas.spaces.space import SearchSpace


class Direction(BaseModel):
    """Options of one decision to prefer or to avoid next round."""

    prefer: list[str] = Field(default_factory=list)
    avoid: list[str] = Field(default_factory=list)


class Strategy(BaseModel):
    """What the Navigator asks of the next round."""

    summary: str
    patterns: list[str] = Field(default_factory=list)
    directions: dict[str, Direction] = Field(default_factory=dict)
    constraints: list[str] = Field(default_factory=list)
    example_codes: list[str] = Field(default_factory=list)
    # Working data of LLM-free strategies (parents to mutate, the incumbent...).
    plan: dict[str, Any] = Field(default_factory=dict)


@dataclass(frozen=True)
class Trial:
    """One recorded evaluation, as strategies see it."""

    seq: int
    ncode: str
    arch: str
    round: int
    status: str
    value: float | None  # the searched metric (None for a failed trial)
    metrics: dict[str, float] = field(default_factory=dict)
    cost: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    created_at: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == "ok" and self.value is not None


class History(Protocol):
    """Read-only view of one run's trials, in evaluation order."""

    def trials(self) -> Sequence[Trial]: ...

    def __contains__(self, ncode: object) -> bool: ...

    def __len__(self) -> int: ...

    def get(self, ncode: str) -> Trial | None: ...

    def best(self) -> Trial | None: ...

    def in_round(self, round_no: int) -> list[Trial]: ...


@dataclass(frozen=True)
class Objective:
    """What the search optimises, in words an LLM prompt can use."""

    metric: str  # the searched metric
    mode: str  # "max" | "min"
    budget: int
    note: str = ""  # e.g. "searched on cifar10_valid, reported on cifar10_test"
    constraints: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()  # resource figures a trial carries (params_mb, ...)


@dataclass
class RoundContext:
    """Everything a role may look at while planning one round."""

    space: SearchSpace
    history: History
    round: int
    seed: int
    mode: str  # "max" | "min"
    quota: int  # how many architectures this round may evaluate
    is_legal: Callable[[str], bool]
    memory: dict[str, Any] = field(default_factory=dict)  # the Navigator's own, kept in graph state
    objective: Objective | None = None
    checker: Any = None  # the run's ValidityChecker (grammars for constrained decoding)
    llm: Any = None  # LLMRoles of this process (None: no LLM); never checkpointed
    calls: list[dict[str, Any]] = field(default_factory=list)  # figures of the LLM calls made this step
    warnings: list[str] = field(default_factory=list)  # one-line notices for the user (e.g. LLM fell back)
    human_comment: str | None = None  # why a person rejected the last batch (approval); the Navigator reads it
    prior: Any = None  # warm-start data from other runs or datasets: [(codes, values), ...], never this run's

    def rng(self, role: str) -> random.Random:
        """A generator seeded by (seed, round, role): a re-run round draws the same numbers."""
        return random.Random(f"{self.seed}/{self.round}/{role}")

    def better(self, a: float, b: float | None) -> bool:
        if b is None:
            return True
        return a > b if self.mode == "max" else a < b

    def is_new_and_legal(self, ncode: str) -> bool:
        return ncode not in self.history and self.is_legal(ncode)

    def sub(self, memory: dict[str, Any]) -> "RoundContext":
        """The same round with another memory (a fallback strategy keeps its own)."""
        return replace(self, memory=memory)


class Navigator(ABC):
    """Turns the history into the next round's strategy (may keep ``ctx.memory``)."""

    @abstractmethod
    def navigate(self, ctx: RoundContext) -> Strategy: ...


class Generator(ABC):
    """Turns a strategy into up to ``n`` candidate NCodes (stateless)."""

    @abstractmethod
    def generate(self, strategy: Strategy, n: int, ctx: RoundContext) -> list[str]: ...

    def revise(self, strategy: Strategy, n: int, ctx: RoundContext, feedback: "Feedback") -> list[str] | None:
        """One corrective follow-up after the Coordinator rejected proposals.

        Returns up to ``n`` new codes, or None when this generator does not
        take feedback (the Coordinator then tops up at once).
        """
        return None


@dataclass(frozen=True)
class Feedback:
    """What the Coordinator found wrong with a round's proposals."""

    wanted: int  # how many more codes the round needs
    illegal: dict[str, list[str]]  # code -> reasons
    duplicates: list[str]
    accepted: list[str]
    reply: str = ""  # the generator's raw answer, for a conversational follow-up


@dataclass(frozen=True)
class SearchStrategy:
    """A named Navigator + Generator pair."""

    name: str
    navigator: Navigator
    generator: Generator
    default_batch_size: int = 1
    description: str = ""
    llm_roles: tuple[str, ...] = ()  # chat roles it talks to (empty: LLM-free)
    needs_llm: bool = False  # without an LLM the run falls back to an LLM-free strategy

    @property
    def uses_llm(self) -> bool:
        return bool(self.llm_roles)
