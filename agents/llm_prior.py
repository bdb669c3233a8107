"""The LLM's own knowledge of a search space, as a prior of the learned ranker (``--prior llm``).

Where a search has few results (its first rounds), a model can help only with what it knows already. Asked
once, at the run's start, which of each two options of a decision gives the better network, in both orders,
its answer is read as the log-probability of each letter (one output token a question), so a preference for
the first-listed letter cancels between the two orders. An option's score is its mean chance of being
preferred over the decision's other options; a code's prior value is the sum of the scores of the options
its network really has (:meth:`SearchSpace.effective_options`: on NAS-Bench-201 a dead edge counts as a cut
one). Decisions with the same options (NAS-Bench-201's six edges) share one set of questions.

The learned ranker takes these values as it takes any prior (another dataset's results, a zero-cost proxy):
from the first round, and less and less as the run's own results come in.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage

from collm_nas.agents.prompting import render
from collm_nas.core.space import SearchSpace
from collm_nas.llm.chat_models import LLMUnavailable

LABELS = ("A", "B")
# Decisions with more options than this are left out of the questions (their pairs grow as n * (n - 1)).
MAX_OPTIONS = 8
NAME = "llm"


@dataclass(frozen=True)
class OptionGroup:
    """Decisions that choose among the same options, asked about once."""

    positions: tuple[int, ...]
    options: tuple[str, ...]

    def describe(self, space: SearchSpace) -> str:
        names = [space.decisions[p].name for p in self.positions]
        first = space.decisions[self.positions[0]]
        if len(names) == 1:
            return f"{first.name}" + (f" ({first.description})" if first.description else "")
        return f"each of the {len(names)} decisions {', '.join(names)} (all choose among the same options)"


def option_groups(space: SearchSpace) -> list[OptionGroup]:
    """The space's decisions grouped by their options (those with 2 to ``MAX_OPTIONS`` options)."""
    groups: dict[tuple[str, ...], list[int]] = {}
    for p, d in enumerate(space.decisions):
        if 2 <= len(d.options) <= MAX_OPTIONS:
            groups.setdefault(tuple(d.options), []).append(p)
    return [OptionGroup(tuple(ps), opts) for opts, ps in groups.items()]


def question(space: SearchSpace, group: OptionGroup, first: str, second: str, metric: str,
             mode: str = "max") -> list[BaseMessage]:
    """Which of two options (``first`` listed as A) gives the better network."""
    position = group.positions[0]
    user = render("prior_user", space=(space.description or space.describe()).strip(),
                  decision=group.describe(space),
                  better=f"{'higher' if mode == 'max' else 'lower'} {metric}",
                  first=space.option_text(position, first), second=space.option_text(position, second))
    return [SystemMessage(render("prior_system")), HumanMessage(user)]


@dataclass
class OptionPreferences:
    """What the model said: per position, each option's score (``None`` for positions never asked), how often
    the first-listed option was preferred (0.5: no position bias), and the calls it took."""

    scores: list[dict[str, float] | None]
    first_listed: float
    calls: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {"scores": self.scores, "first_listed": self.first_listed}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OptionPreferences:
        return cls(scores=data["scores"], first_listed=data["first_listed"], calls=[])

    def values(self, space: SearchSpace, codes: Sequence[str]) -> list[float]:
        """Each code's prior value: the summed scores of the options its network has."""
        out = []
        for code in codes:
            total = 0.0
            for p, option in enumerate(space.effective_options(code)):
                table = self.scores[p]
                if table is not None and option is not None:
                    total += table[option]
            out.append(total)
        return out

    def ranking(self, position: int) -> list[str]:
        """The options of ``position``, most preferred first."""
        table = self.scores[position] or {}
        return sorted(table, key=lambda o: -table[o])


class NoPreferences(Exception):
    """The model gave no usable answer (no log-probabilities, or no LLM); ``calls`` holds what was tried."""

    def __init__(self, reason: str, calls: list[dict[str, Any]]) -> None:
        super().__init__(reason)
        self.calls = calls


def ask_preferences(chat: Any, space: SearchSpace, metric: str, mode: str = "max", *,
                    role: str = "ranker", on_call: Callable[[dict[str, Any]], None] | None = None
                    ) -> OptionPreferences:
    """Ask every ordered pair of every option group once (``chat``: a
    :class:`~collm_nas.llm.structured.StructuredChat`). Raises :class:`NoPreferences` when a question gets no
    log-probabilities or the model is unavailable; the calls made are in the exception. ``on_call`` sees each
    call's figures as it happens."""
    calls: list[dict[str, Any]] = []

    def record(entry: dict[str, Any]) -> None:
        calls.append(entry)
        if on_call is not None:
            on_call(entry)

    scores: list[dict[str, float] | None] = [None] * space.length
    firsts: list[float] = []
    for group in option_groups(space):
        prefer: dict[tuple[str, str], float] = {}  # (a, b): the chance a is preferred, a listed first
        for a, b in itertools.permutations(group.options, 2):
            try:
                result = chat.choice_logprobs(question(space, group, a, b, metric, mode), list(LABELS))
            except LLMUnavailable as e:
                record({"role": role, "kind": "prior", "mode": "logprob", "ok": False, "error": str(e)})
                raise NoPreferences(str(e), calls) from None
            ok = result.logprobs is not None
            record({"role": role, "kind": "prior", "mode": "logprob", "ok": ok,
                    "prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
                    "latency_s": round(result.latency_s, 4), **({} if ok else {"error": result.error})})
            if not ok:
                raise NoPreferences(result.error or "no log-probabilities", calls)
            pa, pb = (math.exp(result.logprobs[label]) for label in LABELS)
            prefer[(a, b)] = pa / (pa + pb) if pa + pb > 0 else 0.5
        firsts += prefer.values()
        table = dict.fromkeys(group.options, 0.0)
        for a, b in itertools.combinations(group.options, 2):
            p = (prefer[(a, b)] + 1.0 - prefer[(b, a)]) / 2  # both orders: the position bias cancels
            table[a] += p / (len(group.options) - 1)
            table[b] += (1.0 - p) / (len(group.options) - 1)
        for position in group.positions:
            scores[position] = {o: round(v, 6) for o, v in table.items()}
    return OptionPreferences(scores, round(statistics.mean(firsts), 6) if firsts else 0.5, calls)


def preference_text(space: SearchSpace, held: dict[str, Any]) -> str:
    """The model's preferences in one line, per option group: ``a > b > c`` (best first)."""
    preferences = OptionPreferences.from_dict(held)
    groups = [g for g in option_groups(space) if preferences.scores[g.positions[0]] is not None]
    orders = [" > ".join(preferences.ranking(g.positions[0])) for g in groups]
    if len(orders) == 1:  # one set of options (NAS-Bench-201's edges): the order alone
        return orders[0]
    return "; ".join(f"{space.decisions[g.positions[0]].name}: {o}" for g, o in zip(groups, orders))
