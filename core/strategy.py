"""The roles of a search round, as interfaces.

* a :class:`Navigator` reads the history and writes a :class:`Strategy`;
* a :class:`Generator` turns a strategy into candidate NCodes;
* the Coordinator (``collm_nas.agents.coordinator``) screens, tops up,
  budgets and stops.

A strategy is a named pair (:class:`SearchStrategy`). LLM-free
implementations and LLM ones plug in behind the same methods, and so does a
user's own (``--strategy mypkg.mine:MyStrategy``).

Optional capability, declared rather than discovered: a Generator whose
``takes_feedback`` is True answers the Coordinator's corrective follow-up
(:meth:`Generator.revise`); the others are topped up at once.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from pydantic import BaseModel, Field

from collm_nas.core.objective import Objective, Objectives, SearchGoal
from collm_nas.core.space import SearchSpace
from collm_nas.core.trial import History


class Preference(BaseModel):
    """Options of one decision to prefer or to avoid next round."""

    prefer: list[str] = Field(default_factory=list)
    avoid: list[str] = Field(default_factory=list)


class Strategy(BaseModel):
    """What the Navigator asks of the next round."""

    summary: str
    patterns: list[str] = Field(default_factory=list)
    directions: dict[str, Preference] = Field(default_factory=dict)
    constraints: list[str] = Field(default_factory=list)
    example_codes: list[str] = Field(default_factory=list)
    # Working data of LLM-free strategies (parents to mutate, the incumbent...).
    plan: dict[str, Any] = Field(default_factory=dict)


@dataclass
class RoundContext:
    """Everything a role may look at while planning one round."""

    space: SearchSpace
    history: History
    round: int
    seed: int
    quota: int  # how many architectures this round may evaluate
    is_legal: Callable[[str], bool]
    objective: Objective = field(default_factory=lambda: Objective("value"))
    goal: SearchGoal | None = None  # the objective in prompt words (budget, constraints, note)
    memory: dict[str, Any] = field(default_factory=dict)  # the Navigator's own, kept in graph state
    checker: Any = None  # the run's ValidityChecker (grammars for constrained decoding)
    llm: Any = None  # LLMRoles of this process (None: no LLM); never checkpointed
    calls: list[dict[str, Any]] = field(default_factory=list)  # figures of the LLM calls made this step
    warnings: list[str] = field(default_factory=list)  # one-line notices for the user (e.g. LLM fell back)
    human_comment: str | None = None  # why a person rejected the last batch (approval); the Navigator reads it
    prior: Any = None  # warm-start data from other runs or datasets: [(name, codes, values)], never this run's
    tools: Any = None  # LangChain tools an LLM role may call (None or empty: the direct path)
    tool_rounds: int = 0  # tool rounds a role may take this turn before it must answer
    navigate_every: int = 1  # an LLM Navigator writes a new strategy every N rounds (RunConfig.navigate_every)
    ranker_pool: str = "learned"  # where an LLM ranker's pools come from (RunConfig.ranker_pool; "none": nowhere)
    llm_prior: bool = False  # the learned ranker's prior includes the LLM's own knowledge (--prior llm)
    ranker_pool_size: int | None = None  # candidates per LLM-ranked pool (None: the strategy's default)
    ranker_scoring: str = "pick"  # how an LLM ranker chooses (RunConfig.ranker_scoring)
    ranker_orders: int | None = None  # logprob scoring: orders a pool is asked in (None: one per candidate)
    conversation: list[Any] | None = None  # a turn in progress: messages so far, tool results last
    objectives: Objectives | None = None  # two or three objectives: a Pareto front is searched (None: one)
    hv_reference: tuple[float, ...] | None = None  # the user's hypervolume reference point (metric units)

    @property
    def mode(self) -> str:
        return self.objective.mode

    def rng(self, role: str) -> random.Random:
        """A generator seeded by (seed, round, role): a re-run round draws the same numbers."""
        return random.Random(f"{self.seed}/{self.round}/{role}")

    def better(self, a: float | None, b: float | None) -> bool:
        return self.objective.direction.better(a, b)

    @property
    def multi_objective(self) -> bool:
        return self.objectives is not None and len(self.objectives) > 1

    def is_new_and_legal(self, ncode: str) -> bool:
        return ncode not in self.history and self.is_legal(ncode)

    def network_key(self, ncode: str) -> str:
        """The network ``ncode`` writes, where the run evaluates each network once; else ``ncode`` itself."""
        key = getattr(self.history, "network_key", None)
        return key(ncode) if key is not None else ncode

    def seen_codes(self) -> set[str]:
        """Codes not to propose again: the evaluated ones and, where the run evaluates each network once,
        every other code of their networks (spaces small enough to enumerate)."""
        seen = {t.ncode for t in self.history.trials()}
        if getattr(self.history, "network_key", None) is not None:
            seen = {c for code in seen for c in self.space.equivalents(code)}
        return seen

    def one_per_network(self, codes: Iterable[str]) -> list[str]:
        """``codes`` in order, keeping the first code of each network (all of them where the run
        evaluates every code)."""
        out, taken = [], set()
        for code in codes:
            key = self.network_key(code)
            if key not in taken:
                taken.add(key)
                out.append(code)
        return out

    def sub(self, memory: dict[str, Any]) -> "RoundContext":
        """The same round with another memory (a fallback strategy keeps its own)."""
        return replace(self, memory=memory)


class ToolCallsPending(Exception):
    """Raised by an LLM role whose model asked for tools: the engine runs them and asks the role again.

    ``messages`` is the whole conversation of the turn, the model's message
    with its tool calls last; the role gets it back, with the tool results
    appended, as ``ctx.conversation``.
    """

    def __init__(self, role: str, messages: list[Any]) -> None:
        super().__init__(f"the {role} asked for tools")
        self.role = role
        self.messages = messages


class Navigator(ABC):
    """Turns the history into the next round's strategy (may keep ``ctx.memory``).

    A user's class that is both a Navigator and a Generator is a whole strategy
    (``--strategy mypkg.mine:MyStrategy``); these class attributes describe it.
    """

    strategy_name: ClassVar[str] = ""
    default_batch_size: ClassVar[int] = 1
    description: ClassVar[str] = ""
    # Declared capability: tools an LLM Navigator may call before it answers (where the endpoint does tools).
    tools: ClassVar[tuple[str, ...]] = ()
    # Declared capability: searches a Pareto front when the run has several objectives (``ctx.objectives``).
    multi_objective: ClassVar[bool] = False

    @abstractmethod
    def navigate(self, ctx: RoundContext) -> Strategy: ...


@dataclass(frozen=True)
class Feedback:
    """What the Coordinator found wrong with a round's proposals."""

    wanted: int  # how many more codes the round needs
    illegal: dict[str, list[str]]  # code -> reasons
    duplicates: list[str]
    accepted: list[str]
    reply: str = ""  # the generator's raw answer, for a conversational follow-up


class Generator(ABC):
    """Turns a strategy into up to ``n`` candidate NCodes (stateless)."""

    # Declared capability: answers the Coordinator's corrective follow-up (revise).
    takes_feedback: ClassVar[bool] = False
    # Declared capability: tools an LLM Generator may call before it answers.
    tools: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def generate(self, strategy: Strategy, n: int, ctx: RoundContext) -> list[str]: ...

    def revise(self, strategy: Strategy, n: int, ctx: RoundContext, feedback: Feedback) -> list[str] | None:
        """One corrective follow-up after the Coordinator rejected proposals (``takes_feedback`` only).

        Returns up to ``n`` new codes, or None when there is nothing to add
        (the Coordinator then tops up).
        """
        return None


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

    @property
    def multi_objective(self) -> bool:
        """Whether it searches a Pareto front (its Navigator declares it)."""
        return self.navigator.multi_objective
