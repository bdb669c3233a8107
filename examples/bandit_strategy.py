"""Bring your own strategy: one file, used as ``--strategy examples.bandit_strategy:OptionBandit``.

An option bandit: every decision of the space is a multi-armed bandit whose
arms are its options. Each round the Navigator scores every option with UCB1
on the search's own results (mean normalised reward plus an exploration
bonus), and the Generator composes candidates option by option, each decision
drawing among its options in proportion to ``exp(score / temperature)``.

It plays both roles (a class that is a Navigator and a Generator), keeps no
hidden state (everything comes from ``ctx.history``), and draws its random
numbers from ``ctx.rng`` (seeded by run seed, round and role), so a resumed
run goes on exactly as an uninterrupted one. ``collm_nas.testing.StrategyContract``
checks all of that (``tests/test_contracts.py``).

    PYTHONPATH=. collm-nas search --strategy examples.bandit_strategy:OptionBandit --budget 100
"""

from __future__ import annotations

import math

from collm_nas.core import Generator, Navigator, RoundContext, Strategy

TRIES_PER_CODE = 200


class OptionBandit(Navigator, Generator):
    """UCB1 per decision over its options; candidates composed option by option."""

    strategy_name = "option-bandit"
    default_batch_size = 4
    description = "option bandit: UCB1 scores per decision and option, candidates drawn option by option"

    def __init__(self, exploration: float = 1.0, temperature: float = 0.1, initial: int = 8) -> None:
        self.exploration = exploration
        self.temperature = temperature
        self.initial = initial

    # ------------------------------------------------------------ Navigator
    def navigate(self, ctx: RoundContext) -> Strategy:
        ok = [t for t in ctx.history.trials() if t.ok]
        if len(ok) < self.initial:
            return Strategy(summary=f"random initial trials ({len(ok)}/{self.initial})", plan={"phase": "init"})
        sign = ctx.objective.direction.sign()
        values = [sign * t.value for t in ok]
        lo, hi = min(values), max(values)
        span = hi - lo or 1.0
        space = ctx.space
        scores: list[list[float]] = []
        for pos, decision in enumerate(space.decisions):
            sums = [0.0] * len(decision.options)
            counts = [0] * len(decision.options)
            for t, v in zip(ok, values):
                idx = space.indices(t.ncode)[pos]
                sums[idx] += (v - lo) / span
                counts[idx] += 1
            total = sum(counts)
            scores.append([
                (sums[i] / counts[i] + self.exploration * math.sqrt(2 * math.log(total) / counts[i]))
                if counts[i] else float("inf")
                for i in range(len(decision.options))
            ])
        best = {d.name: d.options[max(range(len(s)), key=s.__getitem__)] for d, s in zip(space.decisions, scores)}
        return Strategy(summary="compose candidates from the options with the best UCB1 scores",
                        patterns=[", ".join(f"{k}={v}" for k, v in best.items())],
                        plan={"phase": "bandit", "scores": [[round(x, 6) if math.isfinite(x) else 1e9 for x in s]
                                                            for s in scores]})

    # ------------------------------------------------------------ Generator
    def generate(self, strategy: Strategy, n: int, ctx: RoundContext) -> list[str]:
        rng = ctx.rng("generator")
        scores = strategy.plan.get("scores")
        out: list[str] = []
        for _ in range(TRIES_PER_CODE * max(n, 1)):
            if len(out) >= n:
                break
            if scores is None:
                code = ctx.space.sample(rng)
            else:
                code = ctx.space.canonical([self._draw(s, rng) for s in scores])
            if code not in out and ctx.is_new_and_legal(code):
                out.append(code)
        return out

    def _draw(self, scores: list[float], rng) -> int:
        top = max(scores)
        weights = [math.exp((s - top) / self.temperature) for s in scores]
        return rng.choices(range(len(scores)), weights=weights)[0]
