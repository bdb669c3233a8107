"""The Coordinator: screens proposals, tops up the batch, budgets and stops.

It owns the rules that keep a search honest whatever proposes candidates:
nothing illegal and nothing already evaluated is ever evaluated, a batch
never exceeds the budget left, a short batch is topped up by an LLM-free
strategy, and the search ends at the budget, at the target value, after a
number of rounds without improvement, or when the space has nothing new left.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from collm_nas.agents.baselines import sample_new
from collm_nas.core import Feedback, Objective, RoundContext, SearchStrategy

# Proposals whose verdicts a round's figures keep (an LLM may write many more codes than a batch holds).
VERDICTS_KEPT = 100


@dataclass
class Screening:
    """What the Coordinator made of one round's proposals."""

    proposed: int = 0
    accepted: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)  # already evaluated, or twice in the proposals
    # code -> the code that stands for its network (evaluated, or proposed earlier in this round)
    same_network: dict[str, str] = field(default_factory=dict)
    illegal: dict[str, list[str]] = field(default_factory=dict)  # code -> reasons
    topped_up: list[str] = field(default_factory=list)
    corrections: int = 0  # corrective follow-ups sent to the generator
    ranked_out: int = 0  # legal new proposals left out because the quota was full (ranked lower)
    proposals: list[str] = field(default_factory=list)  # the codes as proposed, in order (both passes)
    ranked: list[str] = field(default_factory=list)  # the codes counted in ranked_out

    @property
    def batch(self) -> list[str]:
        return self.accepted + self.topped_up

    def feedback(self, wanted: int, reply: str = "") -> Feedback:
        return Feedback(wanted=wanted, illegal=dict(self.illegal), duplicates=list(self.duplicates),
                        accepted=list(self.accepted), reply=reply)

    def merge(self, later: "Screening") -> "Screening":
        """This screening followed by the screening of a corrective follow-up."""
        illegal = dict(self.illegal)
        illegal.update(later.illegal)
        return Screening(
            proposed=self.proposed + later.proposed,
            accepted=self.accepted + later.accepted,
            duplicates=self.duplicates + later.duplicates,
            same_network={**self.same_network, **later.same_network},
            illegal=illegal,
            topped_up=self.topped_up + later.topped_up,
            corrections=self.corrections + later.corrections + 1,
            ranked_out=self.ranked_out + later.ranked_out,
            proposals=self.proposals + later.proposals,
            ranked=self.ranked + later.ranked,
        )

    def verdicts(self, limit: int = VERDICTS_KEPT) -> list[dict[str, Any]]:
        """What the Coordinator did to each proposal, in the order proposed, then the top-ups (at most ``limit``):
        ``{"ncode", "verdict": accepted | illegal | duplicate | same network | ranked out | topped up, "why"}``."""
        accepted, ranked, same = list(self.accepted), list(self.ranked), dict(self.same_network)
        out: list[dict[str, Any]] = []
        for code in self.proposals:
            if code in accepted:
                accepted.remove(code)
                out.append({"ncode": code, "verdict": "accepted"})
            elif code in self.illegal:
                out.append({"ncode": code, "verdict": "illegal", "why": "; ".join(self.illegal[code])})
            elif code in ranked:
                ranked.remove(code)
                out.append({"ncode": code, "verdict": "ranked out", "why": "the batch was full"})
            elif code in same:
                out.append({"ncode": code, "verdict": "same network",
                            "why": f"the same network as {same.pop(code)}, which stands for it"})
            else:
                out.append({"ncode": code, "verdict": "duplicate", "why": "already evaluated or proposed"})
        out += [{"ncode": code, "verdict": "topped up", "why": "added by the LLM-free fallback"}
                for code in self.topped_up]
        return out[:limit]

    def figures(self) -> dict:
        return {
            "proposed": self.proposed,
            "accepted": len(self.accepted),
            "duplicates": len(self.duplicates),
            "same_network": len(self.same_network),
            "illegal": len(self.illegal),
            "topped_up": len(self.topped_up),
            "corrections": self.corrections,
            "ranked_out": self.ranked_out,
            "illegal_examples": dict(list(self.illegal.items())[:5]),
            "verdicts": self.verdicts(),
        }

    @classmethod
    def from_dict(cls, data: dict) -> "Screening":
        return cls(**{k: data[k] for k in ("proposed", "accepted", "duplicates", "same_network", "illegal",
                                           "topped_up", "corrections", "ranked_out", "proposals", "ranked")
                      if k in data})

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class StopRule:
    budget: int
    target: float | None = None
    objective: Objective = field(default_factory=lambda: Objective("value"))
    patience: int | None = None  # rounds that evaluated something without improvement before stopping

    def reached_target(self, best: float | None) -> bool:
        return self.objective.reached(best, self.target)

    def reason(self, evaluated: int, best: float | None, stale_rounds: int = 0) -> str | None:
        if evaluated >= self.budget:
            return "budget"
        if self.reached_target(best):
            return "target"
        if self.patience is not None and stale_rounds >= self.patience:
            return "no_improvement"
        return None


class Coordinator:
    """Screens, tops up, budgets and stops a search."""

    def __init__(self, checker: Any, stop: StopRule, batch_size: int,
                 fallback: SearchStrategy | None = None) -> None:
        if batch_size < 1:
            raise ValueError("batch size must be at least 1")
        self.checker = checker  # the run's ValidityChecker: problems with reasons
        self.stop = stop
        self.batch_size = batch_size
        self.fallback = fallback  # the LLM-free strategy that tops up short batches (None: uniform)

    def quota(self, evaluated: int) -> int:
        """How many architectures the next batch may hold."""
        return max(0, min(self.batch_size, self.stop.budget - evaluated))

    def screen(self, proposals: Sequence[str], ctx: RoundContext, quota: int, *, top_up: bool = True,
               accepted: Sequence[str] = ()) -> Screening:
        """Drop duplicates and illegal codes, keep at most ``quota``, top up the rest.

        ``accepted`` are codes this round already holds (from an earlier
        screening); they count as duplicates and against the quota. With
        ``top_up=False`` a short batch stays short (the caller may first ask
        the generator to correct itself).
        """
        result = Screening(proposed=len(proposals))
        unique: list[str] = []
        held = set(accepted)
        # The networks this round already holds (one code each); a run that evaluates every code keys by code.
        networks = {ctx.network_key(code): code for code in held}
        quota = quota - len(held)
        history_same = getattr(ctx.history, "same_network", None)
        seen_here: set[str] = set()
        for code in proposals:
            code = code.strip() if isinstance(code, str) else str(code)
            result.proposals.append(code)
            repeated = code in seen_here or code in held
            seen_here.add(code)
            stands = history_same(code) if history_same is not None and not repeated else None
            if stands is not None:  # another code of this network was evaluated: its result stands
                result.same_network[code] = stands.ncode
            elif repeated or code in ctx.history:
                result.duplicates.append(code)
            elif (first := networks.get(ctx.network_key(code))) is not None:
                result.same_network[code] = first
            else:
                unique.append(code)
                if not self.checker.problems(code):  # an illegal code stands for no network
                    networks[ctx.network_key(code)] = code
        for code in unique:
            problems = self.checker.problems(code)
            if problems:
                result.illegal[code] = [p.message for p in problems]
            elif len(result.accepted) < quota:
                result.accepted.append(code)
            else:
                result.ranked_out += 1
                result.ranked.append(code)
        missing = quota - len(result.accepted)
        if missing > 0 and top_up:
            result.topped_up = self.top_up(ctx, missing, exclude=held | set(result.accepted))
        return result

    def top_up(self, ctx: RoundContext, n: int, exclude: set[str]) -> list[str]:
        """``n`` new legal codes from the LLM-free fallback strategy, then uniform draws.

        The fallback keeps its memory under ``ctx.memory["fallback"]`` so it
        never disturbs the main strategy's memory.
        """
        out: list[str] = []
        networks = {ctx.network_key(code) for code in exclude}  # one code per network in a batch

        def take(code: str) -> None:
            if (len(out) < n and code not in exclude and code not in out and ctx.is_new_and_legal(code)
                    and ctx.network_key(code) not in networks):
                networks.add(ctx.network_key(code))
                out.append(code)

        if self.fallback is not None:
            memory = ctx.memory.setdefault("fallback", {})
            sub = replace(ctx.sub(memory), llm=None)  # the fallback never talks to the LLM
            plan = self.fallback.navigator.navigate(sub)
            for code in self.fallback.generator.generate(plan, n, sub):
                take(code)
        if len(out) < n:  # uniform draws, one per network, none of the batch's networks
            out += sample_new(ctx, n - len(out), ctx.rng("coordinator"), exclude=exclude | set(out),
                              networks=networks)
        return out

    def stop_reason(self, evaluated: int, best: float | None, batch_was_empty: bool = False,
                    stale_rounds: int = 0) -> str | None:
        reason = self.stop.reason(evaluated, best, stale_rounds)
        if reason is None and batch_was_empty:
            return "exhausted"
        return reason
