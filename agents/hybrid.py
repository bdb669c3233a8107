"""Hybrid search: the CoLLM-NAS Generator proposes many, a ranker picks what is evaluated.

The Navigator is CoLLM-NAS's (a strategy written from the history). The
Generator is asked for several times more candidates than the round may
evaluate; the learned ranker (fitted on the run's trials, warm-started from a
prior when one is given) orders the legal, unseen ones, and the Coordinator
takes the best of them up to the round's quota. So evaluations are spent only
on the candidates the ranker rates highest among what the LLM proposed.

With a tuned ranker model (``--llm local --llm-model DIR`` naming a
``collm-nas finetune`` folder) the tuned model picks the round's candidates
one by one, each time from the learned ranker's best ten of what is left;
the learned order fills any slot it does not pick.

What the ranker leaves out is counted as "ranked out" in the round figures;
illegal and repeated proposals are handed on unranked, so the Coordinator
counts them exactly as it does for CoLLM-NAS. A short pool goes through the
same corrective follow-up and fallback top-up as CoLLM-NAS.
"""

from __future__ import annotations

from collections.abc import Callable

from langchain_core.tools import StructuredTool
from pydantic import BaseModel, Field

from collm_nas.llm.chat_models import LLMUnavailable
from collm_nas.agents.collm import LLM_COOLDOWN_ROUNDS, LLMGenerator, LLMNavigator, llm_ready
from collm_nas.agents.lmsearcher import learned_ranking, llm_ranker_of
from collm_nas.core import Feedback, RoundContext, SearchStrategy, Strategy
from collm_nas.tools.messages import validation_message
from collm_nas.tools.pools import proposal_pool

# Candidates asked of the Generator per architecture the round evaluates.
OVERSAMPLE = 4
# Most candidates asked in one call (keeps answers short for small models).
MAX_ASK = 24
# Candidates a tuned ranker model chooses from at a time (what it was trained on).
TUNED_POOL = 10


class HybridNavigator(LLMNavigator):
    """CoLLM-NAS's Navigator, which may also ask the learned ranker about candidate codes (``rank_pool``)."""

    tools = (*LLMNavigator.tools, "rank_pool")


class RankedProposalGenerator(LLMGenerator):
    """Asks the LLM for ``oversample`` times the quota and returns the proposals ranked."""

    tools = (*LLMGenerator.tools, "rank_pool")

    def __init__(self, oversample: int = OVERSAMPLE, max_ask: int = MAX_ASK, acquisition: str = "ei") -> None:
        if oversample < 1 or max_ask < 1:
            raise ValueError("oversample and max_ask must be at least 1")
        self.oversample = oversample
        self.max_ask = max_ask
        self.acquisition = acquisition

    def _asked(self, n: int) -> int:
        return max(n, min(n * self.oversample, self.max_ask))

    def generate(self, strategy: Strategy, n: int, ctx: RoundContext) -> list[str]:
        return self.ranked(super().generate(strategy, self._asked(n), ctx), ctx, n)

    def revise(self, strategy: Strategy, n: int, ctx: RoundContext, feedback: Feedback) -> list[str] | None:
        codes = super().revise(strategy, self._asked(n), ctx, feedback)
        return None if codes is None else self.ranked(codes, ctx, n)

    def ranked(self, proposals: list[str], ctx: RoundContext, n: int | None = None) -> list[str]:
        """Legal unseen proposals best first, then the rest (illegal or repeated) as they came."""
        seen = ctx.seen_codes()
        pool = proposal_pool(proposals, ctx.is_legal, exclude=seen)
        pooled, rest = set(pool), []
        for code in proposals:
            key = code.strip() if isinstance(code, str) else code
            if key in pooled:
                pooled.discard(key)  # the first copy is in the pool; a repeat goes to the Coordinator
            else:
                rest.append(code)
        if ctx.calls:
            ctx.calls[-1]["ranked_pool"] = len(pool)
        order = learned_ranking(ctx, pool, self.acquisition)
        if getattr(ctx.llm, "tuned_ranker", False) and not ctx.multi_objective and llm_ready(ctx):
            order = tuned_order(ctx, order, n if n is not None else ctx.quota)
        return order + rest


def tuned_order(ctx: RoundContext, order: list[str], n: int) -> list[str]:
    """``order`` with its first ``n`` places chosen one by one by the tuned ranker model."""
    ranker, chat = llm_ranker_of(ctx), ctx.llm.chat("ranker")
    objective = ctx.goal
    picked, left = [], list(order)
    while len(picked) < n and len(left) > 1:
        try:
            outcome = ranker.pick(chat, ctx.space, ctx.history.trials(), left[:TUNED_POOL], mode=ctx.mode,
                                  max_redraws=0, metric=objective.metric if objective else "value",
                                  constraints=objective.constraints if objective else (), calls=ctx.calls)
        except LLMUnavailable as e:
            ctx.memory["llm_paused_until"] = ctx.round + LLM_COOLDOWN_ROUNDS - 1
            ctx.warnings.append(f"{e}; the learned ranker orders round {ctx.round}'s proposals")
            break
        if outcome.note and outcome.note not in ctx.warnings:
            ctx.warnings.append(outcome.note)
        if outcome.code is None:
            break
        picked.append(outcome.code)
        left.remove(outcome.code)
    return picked + left


class RankArgs(BaseModel):
    codes: list[str] = Field(description="candidate NCodes to rank", min_length=1, max_length=64)


def make_learned_rank_tool(context: Callable[[], RoundContext]) -> StructuredTool:
    """``rank_pool``: the run's learned ranker orders candidate codes (legal, unseen ones; the rest are named)."""

    def rank_pool(codes: list[str]) -> dict:
        ctx = context()
        seen = ctx.seen_codes()
        pool = proposal_pool(codes, ctx.is_legal, exclude=seen)
        ranked = learned_ranking(ctx, pool)
        skipped = [c for c in dict.fromkeys(str(c).strip() for c in codes) if c not in set(pool)]
        return {"ranked_best_first": ranked,
                "left_out": {c: ("already evaluated" if c in seen else "illegal") for c in skipped}}

    return StructuredTool.from_function(
        func=rank_pool,
        name="rank_pool",
        description=("Order candidate NCodes by how promising the learned ranker (a Gaussian process fitted on this "
                     "run's results) finds them, best first; illegal or already evaluated codes are left out."),
        args_schema=RankArgs,
        handle_tool_error=True,
        handle_validation_error=validation_message,
    )


def hybrid_search(batch_size: int = 5) -> SearchStrategy:
    return SearchStrategy(
        "hybrid",
        HybridNavigator(),
        RankedProposalGenerator(),
        batch_size,
        "Hybrid: the CoLLM-NAS Navigator and Generator propose several candidates per slot, "
        "the learned ranker picks which are evaluated",
        llm_roles=("navigator", "generator"),
        needs_llm=True,
    )
