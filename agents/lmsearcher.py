"""LM-Searcher: search as ranking, with an LLM ranker or a learned one.

Each round, after a few random trials, the Navigator has unseen legal
candidates ranked:

* by the LLM ranker (``ctx.llm`` has a ``ranker`` role): the model sees the
  history as ``NCODE|reward`` lines and a pool, and picks one code; an answer
  outside the pool draws a new pool, a bounded number of times. The pool is
  the learned ranker's best few, shuffled (``ranker_pool`` "learned", the
  default), or LM-Searcher's own pruning-based subspace sample ("subspace");
* by the learned ranker (no LLM, or the LLM failed): a surrogate fitted on
  the run's own trials (optionally warm-started from a prior of other runs
  or datasets) scores a large pool by an acquisition rule.

The picks travel in the strategy's plan; the Generator only hands them on,
and the Coordinator screens them like any other proposal.
"""

from __future__ import annotations

import itertools
import json
import math
import random
from collections.abc import Callable
from functools import lru_cache

import torch

from collm_nas.agents.baselines import sample_new
from collm_nas.llm.chat_models import LLMUnavailable
from collm_nas.agents.collm import LLM_COOLDOWN_ROUNDS, llm_ready
from collm_nas.agents.digest import objectives_phrase
from collm_nas.agents.fronts import front_rewarded, run_focus
from collm_nas.core.pareto import (expected_improvements_2d, expected_improvements_3d, improvements_2d,
                                   non_dominated)
from collm_nas.core.strategy import Generator, Navigator, RoundContext, SearchStrategy, Strategy
from collm_nas.agents.surrogate import LearnedRanker, PriorModel
from collm_nas.agents.llm_prior import NAME as LLM_PRIOR_NAME
from collm_nas.agents.llm_prior import NoPreferences, OptionPreferences, ask_preferences, preference_text
from collm_nas.core.space import SearchSpace
from collm_nas.tools.grammar import legal_codes
from collm_nas.tools.pools import sample_pool
from collm_nas.agents.ranker import LLMRanker

# Pool the learned ranker scores when the space is too large to score whole.
LEARNED_POOL = 4000
# Candidates in each pool the LLM ranks when the learned ranker narrowed it (RunConfig.ranker_pool "learned").
LEARNED_POOL_FOR_LLM = 5


@lru_cache(maxsize=8)
def _prior_models(space: SearchSpace, mode: str, prior: tuple) -> tuple[PriorModel, ...]:
    """Prior models are deterministic and costly to fit: build them once per (space, mode, prior)."""
    return tuple(PriorModel(space, codes, values, mode, name=name) for name, codes, values in prior)


def _frozen(prior: list) -> tuple:
    return tuple((name, tuple(codes), tuple(values)) for name, codes, values in prior)


def learned_ranking(ctx: RoundContext, pool: list[str], acquisition: str = "ei") -> list[str]:
    """``pool`` ordered best first by the learned ranker fitted on the run's trials (and its prior)."""
    ok = [t for t in ctx.history.trials() if t.ok]
    if not pool or (not ok and not ctx.prior):
        return list(pool)
    if ctx.multi_objective:
        return pareto_ranking(ctx, pool)
    models = _prior_models(ctx.space, ctx.mode, _frozen(ctx.prior)) if ctx.prior else None
    ranker = LearnedRanker(ctx.space, mode=ctx.mode, acquisition=acquisition, prior=models, seed=ctx.seed)
    ranker.fit([t.ncode for t in ok], [t.value for t in ok])
    return ranker.rank(pool)


@lru_cache(maxsize=8)
def _llm_prior_entry(space: SearchSpace, codes: tuple[str, ...], scores: str) -> tuple[str, list[str], list[float]]:
    preferences = OptionPreferences.from_dict(json.loads(scores))
    return (LLM_PRIOR_NAME, list(codes), preferences.values(space, codes))


def _prior_codes(ctx: RoundContext) -> tuple[str, ...]:
    """The codes the LLM's prior is written for: every legal code where the space is small enough to list,
    else a fixed sample (the prior model generalises from it)."""
    everything = legal_codes(ctx.checker) if ctx.checker is not None else None
    if everything is not None:
        return tuple(everything)
    return tuple(sample_pool(ctx.space, ctx.is_legal, LEARNED_POOL, random.Random(ctx.seed), prune_prob=0.0))


def with_llm_prior(ctx: RoundContext) -> list | None:
    """The run's prior, with the LLM's own knowledge where the run asks for it (``--prior llm``): the model is
    asked once, in the run's first round (its calls counted there), and its answer is kept in the Navigator's
    memory, so a resumed run goes on with the same prior and never asks again. A model that cannot answer
    (no log-probabilities, unavailable) leaves the ranker without it, and the round says so."""
    if not ctx.llm_prior:
        return ctx.prior
    held = ctx.memory.get("llm_prior")
    if held is None:
        objective = ctx.goal
        metric = objective.metric if objective else "score"
        try:
            if ctx.llm is None:
                raise NoPreferences("no LLM is open in this run", [])
            held = ask_preferences(ctx.llm.chat("ranker"), ctx.space, metric, ctx.mode,
                                   on_call=ctx.calls.append).to_dict()
        except NoPreferences as e:
            held = {"error": str(e)}
            ctx.warnings.append(f"the LLM's prior (--prior llm) is missing: {e}; the learned ranker goes on "
                                "without it")
        ctx.memory["llm_prior"] = held
    if "error" in held:
        return ctx.prior
    entry = _llm_prior_entry(ctx.space, _prior_codes(ctx), json.dumps(held, sort_keys=True))
    return [*(ctx.prior or []), entry]


# ParEGO's augmentation of the Chebyshev scalarisation, and how optimistic a predicted objective is taken.
CHEBYSHEV_RHO = 0.05
# A pool of at least this many unseen codes stands for the space when a predicted objective's median is estimated.
SPACE_SAMPLE = 200
OPTIMISM = 1.0


def pareto_ranking(ctx: RoundContext, pool: list[str]) -> list[str]:
    """Several objectives: ``pool`` ordered by the hypervolume each candidate would add (two or three
    objectives), then by a random Chebyshev scalarisation (ParEGO) of the objectives.

    An objective the evaluator knows before evaluation (a table's parameters,
    FLOPs or latency: the constraint resources) is taken as it is; the others
    are predicted by a GP fitted on the run's trials (the first objective with
    the run's prior). With two or three objectives of which one is
    predicted and the rest known, the order is by the exact expected
    hypervolume improvement beyond the focus point of
    :mod:`collm_nas.agents.fronts` (the user's reference, else the space's
    median of a known cost; for a predicted objective of two, on a pool large
    enough to stand for the space, its median over the pool's predictions and
    the trials, else the trials' median): for each cost, the chance and size
    of beating the front there. Otherwise the hypervolume
    an optimistic prediction (mean plus one standard deviation) would add.
    Ties (no candidate can add anything) go to the scalarisation: each round
    draws its own weights (seeded by round), every objective scaled to [0, 1]
    from the focus point to the best value so far.
    """
    objectives = ctx.objectives
    ok = [(t, p) for t in ctx.history.trials() if (p := objectives.point(t)) is not None]
    if not ok:
        return list(pool)
    known = _known_resources(ctx, pool, objectives.metrics)
    columns: list[torch.Tensor] = []
    predicted: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for k, objective in enumerate(objectives.items):
        if objective.metric in known:
            columns.append(objective.direction.sign() * known[objective.metric])
            continue
        prior = _prior_models(ctx.space, ctx.mode, _frozen(ctx.prior)) if ctx.prior and k == 0 else None
        ranker = LearnedRanker(ctx.space, mode="max", transform="standard", prior=prior, seed=ctx.seed)
        values = [p[k] for _, p in ok]
        ranker.fit([t.ncode for t, _ in ok], values)
        mean, sd = ranker.predict(pool)
        centre, spread = _centre_spread(values)
        predicted[k] = (centre + spread * mean, spread * sd)
        columns.append(predicted[k][0] + OPTIMISM * predicted[k][1])
    rng = ctx.rng("navigator")
    draws = [rng.expovariate(1.0) for _ in objectives.items]
    weights = [d / sum(draws) for d in draws]
    # From the focus point to the best value so far: 0 to 1.
    lows = list(run_focus(ctx, [p for _, p in ok]))
    if not ctx.hv_reference and len(objectives) == 2 and len(pool) >= SPACE_SAMPLE:
        # A predicted objective's focus: its median over the space (the model's means over a pool this large,
        # the trials' own values), not over the trials alone, which a good search pushes up the front. Two
        # objectives only: with three it spread the budget too thin (benchmarks page, three objectives).
        for k, (mean, _) in predicted.items():
            lows[k] = float(torch.cat([mean, torch.tensor([p[k] for _, p in ok], dtype=mean.dtype)]).median())
    highs = [max(p[k] for _, p in ok) for k in range(len(weights))]
    scaled = torch.stack([w * (col - lo) / ((h - lo) if h > lo else 1.0)
                          for w, col, lo, h in zip(weights, columns, lows, highs)], dim=1)
    score = scaled.min(1).values + CHEBYSHEV_RHO * scaled.sum(1)
    gains = torch.zeros(len(pool), dtype=torch.float64)
    if len(objectives) == 2:  # first by the hypervolume a candidate adds beyond the focus point
        front = [ok[i][1] for i in non_dominated([p for _, p in ok])]
        if len(predicted) == 1:  # one objective known for every code: the exact expectation
            (u, (mean, sd)), = predicted.items()
            gains = torch.tensor(expected_improvements_2d(front, columns[1 - u], mean, sd, lows, known_axis=1 - u),
                                 dtype=torch.float64)
        else:
            gains = torch.tensor(improvements_2d(front, torch.stack(columns, 1).tolist(), lows), dtype=torch.float64)
    elif len(objectives) == 3:
        front = [ok[i][1] for i in non_dominated([p for _, p in ok])]
        if len(predicted) == 1:  # accuracy predicted, two costs known (a table's latency and size)
            (u, (mean, sd)), = predicted.items()
            known_columns = torch.stack([columns[k] for k in range(3) if k != u], 1)
            gains = torch.tensor(expected_improvements_3d(front, known_columns, mean, sd, lows, uncertain_axis=u),
                                 dtype=torch.float64)
        else:  # the optimistic predictions' exact improvement (no spread)
            gains = torch.tensor(expected_improvements_3d(front, torch.stack(columns[1:], 1), columns[0],
                                                          torch.zeros(len(pool), dtype=torch.float64), lows),
                                 dtype=torch.float64)
    # By gain, then score, then pool order (stable sorts, the last key first).
    order = torch.argsort(-score, stable=True)
    order = order[torch.argsort(-gains[order], stable=True)]
    return [pool[i] for i in order.tolist()]


def _centre_spread(values: list[float]) -> tuple[float, float]:
    """The mean and standard deviation the GP's standardised targets were made with."""
    centre = sum(values) / len(values)
    if len(values) < 2:
        return centre, 1.0
    spread = (sum((v - centre) ** 2 for v in values) / (len(values) - 1)) ** 0.5
    return centre, spread if spread > 0 else 1.0


@lru_cache(maxsize=16)
def _resource_memo(resources: Callable[[str], dict[str, float]], metrics: tuple[str, ...]) -> dict[str, tuple]:
    """Per code, its figures of ``metrics`` known before evaluation (NaN where unknown), filled as codes come
    up: a code's resources never change, and rounds score the same codes again and again."""
    return {}


def _known_resources(ctx: RoundContext, pool: list[str], metrics: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The objectives the run knows for every pool code before evaluation: ``{metric: values in pool order}``."""
    resources = ctx.checker.resources if ctx.checker is not None else None
    if resources is None or not pool:
        return {}
    memo = _resource_memo(resources, metrics)
    for code in pool:
        if code not in memo:
            figures = resources(code)
            memo[code] = tuple(float(figures[m]) if m in figures else math.nan for m in metrics)
    table = torch.tensor([memo[c] for c in pool], dtype=torch.float64).reshape(len(pool), len(metrics))
    return {m: table[:, j] for j, m in enumerate(metrics) if not bool(torch.isnan(table[:, j]).any())}


def cheapest_per_network(ctx: RoundContext, codes: list[str]) -> list[str]:
    """One code per network, as :meth:`RoundContext.one_per_network`, but where the run knows objectives before
    evaluation (a table's latency and size) the network's code that costs least by them, in the objectives'
    order: one network trains alike whatever its code, but dead edges still cost latency and parameters, so the
    cheapest code is the one that can reach the front. Networks keep the place of their first code."""
    objectives = ctx.objectives
    known = _known_resources(ctx, codes, objectives.metrics) if objectives is not None else {}
    if not known:
        return ctx.one_per_network(codes)
    signed = [objective.direction.sign() * known[objective.metric]
              for objective in objectives.items if objective.metric in known]
    costs = torch.stack(signed, 1).neg().tolist()  # smaller is better in every column
    best: dict[str, int] = {}  # network -> index of its cheapest code; dicts keep the first code's place
    for i, code in enumerate(codes):
        key = ctx.network_key(code)
        if key not in best or costs[i] < costs[best[key]]:
            best[key] = i
    return [codes[i] for i in best.values()]


def llm_ranker_of(ctx: RoundContext, default: LLMRanker | None = None) -> LLMRanker:
    """The ranker that asks the run's ranker model the way it expects (a tuned model: as it was trained), choosing
    as the run says (``ranker_scoring``, ``ranker_orders``)."""
    return LLMRanker.for_roles(ctx.llm, default, scoring=ctx.ranker_scoring,
                               orders=ctx.ranker_orders)


class RankingNavigator(Navigator):
    multi_objective = True

    def __init__(self, initial: int = 10, pool_size: int = 10, prune_prob: float = 0.5,
                 learned_pool: int = LEARNED_POOL, acquisition: str = "ei") -> None:
        self.initial = initial
        self.pool_size = pool_size
        self.prune_prob = prune_prob
        self.learned_pool = learned_pool
        self.acquisition = acquisition
        self.llm_ranker = LLMRanker()

    def navigate(self, ctx: RoundContext) -> Strategy:
        ok = [t for t in ctx.history.trials() if t.ok]
        asked = ctx.llm_prior and "llm_prior" not in ctx.memory  # this round asks the model for its prior
        prior = ctx.prior = with_llm_prior(ctx)
        # A prior lets one objective be ranked from the first round; several objectives need trials first (the
        # focus point and the front come from them).
        if len(ok) < self.initial and (not prior or ctx.multi_objective):
            summary = f"random initial trials ({len(ok)}/{self.initial})"
            if asked and "scores" in ctx.memory.get("llm_prior", {}):
                summary += f"; the LLM's prior: {preference_text(ctx.space, ctx.memory['llm_prior'])}"
            return Strategy(summary=summary,
                            plan={"phase": "init", "llm": "asked for the prior" if asked else "not needed"})
        rng = ctx.rng("navigator")
        seen = ctx.seen_codes()  # with every code of an evaluated network, where the run evaluates each once
        picks: list[str] = []
        how = "learned"
        ranked: list[str] | None = None  # the learned ranking of the unseen candidates, computed once a round
        ranks = ctx.ranker_pool != "none" and len(ok) >= self.initial  # a round the LLM is meant to rank
        if ctx.llm is not None and llm_ready(ctx) and ranks:
            if ctx.ranker_pool == "learned":
                ranked = learned_ranking(ctx, self._unseen(ctx, rng, seen), self.acquisition)
            picks = self._llm_picks(ctx, rng, seen, ranked)
            how = "llm" if ranked is None else "llm on learned pools"
        missing = ctx.quota - len(picks)
        if missing > 0:
            picked = {ctx.network_key(c) for c in picks}
            if ranked is None:
                ranked = learned_ranking(ctx, self._unseen(ctx, rng, seen | set(picks)), self.acquisition)
            picks += [c for c in ranked if ctx.network_key(c) not in picked][:missing]
            if how != "learned":
                how += "+learned"
        plan = {"phase": "rank", "picks": picks, "ranker": how}
        if not ranks:  # the learned ranker's round by design (no fallback), unless it asked for the prior
            plan["llm"] = "asked for the prior" if asked else "not needed"
        summary = f"rank candidate pools ({how} ranker) and evaluate the most promising"
        if asked and "scores" in ctx.memory.get("llm_prior", {}):
            summary += f"; the LLM's prior: {preference_text(ctx.space, ctx.memory['llm_prior'])}"
        return Strategy(summary=summary, plan=plan)

    def _unseen(self, ctx: RoundContext, rng, taken: set[str]) -> list[str]:
        """What the learned ranker scores: every unseen legal network (one code each) where the space is small
        enough to list, else a large pool."""
        everything = legal_codes(ctx.checker) if ctx.checker is not None else None
        if everything is not None:
            fresh = [c for c in everything if c not in taken]
            return cheapest_per_network(ctx, fresh) if ctx.multi_objective else ctx.one_per_network(fresh)
        return sample_pool(ctx.space, ctx.is_legal, self.learned_pool, rng, exclude=taken, prune_prob=0.0)

    def _llm_picks(self, ctx: RoundContext, rng, seen: set[str], ranked: list[str] | None) -> list[str]:
        """The LLM's picks, one pool per pick: pruning-sampled pools, or (``ranked``: the learned ranking) the
        learned ranker's next best candidates, shuffled so that their order tells the model nothing."""
        picks: list[str] = []
        chat = ctx.llm.chat("ranker")
        ranker = llm_ranker_of(ctx, self.llm_ranker)
        size = ctx.ranker_pool_size or (self.pool_size if ranked is None else LEARNED_POOL_FOR_LLM)
        for _ in range(ctx.quota):
            exclude = seen | set(picks)
            draws = [0]

            def draw(exclude: set[str] = exclude, draws: list[int] = draws) -> list[str]:
                if ranked is None:
                    return sample_pool(ctx.space, ctx.is_legal, size, rng, exclude=exclude,
                                       prune_prob=self.prune_prob)
                taken = {ctx.network_key(c) for c in exclude}
                fresh = (c for c in ranked if ctx.network_key(c) not in taken)
                # The best ``size`` not taken yet; a redraw (an answer outside the pool) takes the next ones.
                pool = list(itertools.islice(fresh, draws[0] * size, (draws[0] + 1) * size))
                draws[0] += 1
                rng.shuffle(pool)
                return pool

            pool = draw()
            if not pool:
                break
            objective = ctx.goal
            trials, mode, metric = ctx.history.trials(), ctx.mode, objective.metric if objective else "value"
            if ctx.multi_objective:  # the reward is the place on the front: the model ranks for the front
                trials, mode = front_rewarded(ctx.objectives, trials), "max"
                metric = f"a place on the Pareto front of {objectives_phrase(objective)}"
            try:
                outcome = ranker.pick(
                    chat, ctx.space, trials, pool, mode=mode, redraw=draw, metric=metric,
                    constraints=objective.constraints if objective else (), calls=ctx.calls)
            except LLMUnavailable as e:  # the failed call is already in ctx.calls
                ctx.memory["llm_paused_until"] = ctx.round + LLM_COOLDOWN_ROUNDS - 1
                ctx.warnings.append(f"{e}; round {ctx.round} is ranked by the learned ranker")
                break
            ctx.memory["outside_pool"] = ctx.memory.get("outside_pool", 0) + outcome.outside_pool
            _warn_once(ctx, outcome.note)
            if outcome.code is None:
                break
            picks.append(outcome.code)
        return picks


def _warn_once(ctx: RoundContext, note: str | None) -> None:
    """A ranker's note (logprob scoring that fell back to a pick) in the round's warnings, once a round."""
    if note and note not in ctx.warnings:
        ctx.warnings.append(note)


class PickGenerator(Generator):
    """Hands on the Navigator's picks (random codes in the initial phase)."""

    def generate(self, strategy: Strategy, n: int, ctx: RoundContext) -> list[str]:
        if strategy.plan.get("phase") != "rank":
            return sample_new(ctx, n, ctx.rng("generator"))
        return list(strategy.plan.get("picks") or [])[:n]


def lmsearcher_search() -> SearchStrategy:
    return SearchStrategy(
        "lmsearcher",
        RankingNavigator(),
        PickGenerator(),
        1,
        "LM-Searcher: rank pruning-sampled candidate pools with the LLM (or a learned ranker) and evaluate the pick",
        llm_roles=("ranker",),
        needs_llm=False,
    )
