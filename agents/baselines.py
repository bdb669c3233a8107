"""LLM-free strategies: random search, regularized evolution, local search.

They are the baselines every LLM strategy is measured against, and the
Coordinator's fallback. Each is split into the same two roles as the LLM
strategies. With several objectives (``ctx.objectives``) each searches a
Pareto front: random search as it is, evolution with NSGA-II's elitist
selection (front, then crowding distance), local search from the points of
the current front (Pareto local search). Nothing here keeps hidden state: what a strategy needs is read
from the history or from ``ctx.memory`` (checkpointed), and random numbers
come from ``ctx.rng`` (seeded per round), so a resumed run continues exactly.
"""

from __future__ import annotations

import random

from collm_nas.agents.fronts import front_by_promise, survivors
from collm_nas.core.strategy import Generator, Navigator, RoundContext, SearchStrategy, Strategy

# How many draws a sampler makes per wanted code before giving up on luck.
SAMPLE_TRIES_PER_CODE = 200
# Spaces up to this size are enumerated when random draws keep missing.
ENUMERATE_LIMIT = 200_000


def sample_new(ctx: RoundContext, n: int, rng: random.Random, exclude: set[str] | None = None,
               networks: set[str] | None = None) -> list[str]:
    """Up to ``n`` distinct legal codes not yet evaluated, drawn uniformly, one per network.

    Rejection sampling first; if that keeps missing (a crowded or tightly
    constrained space), enumerate what is left when the space is small.
    ``networks`` are network keys (:meth:`RoundContext.network_key`) the
    draws must avoid besides the evaluated ones; it is updated in place.
    """
    exclude = set(exclude or ())
    networks = networks if networks is not None else set()
    out: list[str] = []

    def fresh(code: str) -> bool:
        if code in exclude or not ctx.is_new_and_legal(code) or ctx.network_key(code) in networks:
            return False
        exclude.add(code)
        networks.add(ctx.network_key(code))
        return True

    for _ in range(SAMPLE_TRIES_PER_CODE * max(n, 1)):
        if len(out) >= n:
            return out
        code = ctx.space.sample(rng)
        if fresh(code):
            out.append(code)
    if len(out) < n and ctx.space.size_bound() <= ENUMERATE_LIMIT:
        rest = [c for c in ctx.space.enumerate() if c not in exclude and ctx.is_new_and_legal(c)]
        rng.shuffle(rest)
        for code in rest:
            if len(out) >= n:
                break
            if fresh(code):
                out.append(code)
    return out


# ----------------------------------------------------------------- random
class UniformNavigator(Navigator):
    multi_objective = True  # uniform draws know no objective

    def navigate(self, ctx: RoundContext) -> Strategy:
        return Strategy(summary="sample legal, unseen architectures uniformly at random")


class UniformGenerator(Generator):
    def generate(self, strategy: Strategy, n: int, ctx: RoundContext) -> list[str]:
        return sample_new(ctx, n, ctx.rng("generator"))


# ---------------------------------------------------- regularized evolution
class EvolutionNavigator(Navigator):
    """Regularized evolution (Real et al., 2019): aging population, tournament selection.

    The population is the ``population`` most recent successful trials; each
    child's parent is the best of ``tournament`` members drawn at random.
    """

    multi_objective = True

    def __init__(self, population: int = 10, tournament: int = 5) -> None:
        if not 1 <= tournament <= population:
            raise ValueError("tournament size must be between 1 and the population size")
        self.population = population
        self.tournament = tournament

    def navigate(self, ctx: RoundContext) -> Strategy:
        ok = [t for t in ctx.history.trials() if t.ok]
        if ctx.multi_objective and len(ok) >= self.population:
            return self._nsga(ctx)
        if len(ok) < self.population:
            return Strategy(
                summary=f"fill the initial population ({len(ok)}/{self.population}) with random architectures",
                plan={"phase": "init"},
            )
        members = ok[-self.population :]
        rng = ctx.rng("navigator")
        parents = []
        # One tournament per wanted child; the generator uses them in order.
        for _ in range(max(ctx.quota, 1)):
            contenders = rng.sample(members, self.tournament)
            best = contenders[0]
            for t in contenders[1:]:
                if ctx.better(t.value, best.value):
                    best = t
            parents.append(best.ncode)
        return Strategy(
            summary=(
                f"mutate one decision of tournament winners (tournament {self.tournament} "
                f"of the {self.population} most recent architectures)"
            ),
            example_codes=parents[:3],
            plan={"phase": "evolve", "parents": parents},
        )


    def _nsga(self, ctx: RoundContext) -> Strategy:
        """Several objectives: the population is the ``population`` best of all trials by front and crowding
        (elitist, as NSGA-II), and a tournament's winner is the contender best placed in that order."""
        members = survivors(ctx, self.population)
        rng = ctx.rng("navigator")
        parents = [min(rng.sample(range(len(members)), min(self.tournament, len(members))))
                   for _ in range(max(ctx.quota, 1))]
        codes = [members[i].ncode for i in parents]
        return Strategy(
            summary=(f"mutate one decision of tournament winners (tournament {self.tournament} of the "
                     f"{len(members)} best by Pareto front and hypervolume contribution)"),
            example_codes=codes[:3],
            plan={"phase": "evolve", "parents": codes},
        )


class MutationGenerator(Generator):
    """Children of the strategy's parents, each differing in one decision."""

    def generate(self, strategy: Strategy, n: int, ctx: RoundContext) -> list[str]:
        rng = ctx.rng("generator")
        parents = strategy.plan.get("parents") or []
        if not parents:
            return sample_new(ctx, n, rng)
        out: list[str] = []
        networks: set[str] = set()
        for i in range(n):
            parent = parents[i % len(parents)]
            for _ in range(SAMPLE_TRIES_PER_CODE):
                child = ctx.space.mutate(parent, rng)
                if child not in out and ctx.is_new_and_legal(child) and ctx.network_key(child) not in networks:
                    networks.add(ctx.network_key(child))  # one child per network
                    out.append(child)
                    break
        return out


# ------------------------------------------------------------- local search
class LocalSearchNavigator(Navigator):
    """First-improvement hill climbing over the one-decision neighbourhood.

    ``ctx.memory`` holds the incumbent (``center``). After each round the
    incumbent moves to the first evaluated neighbour that beats it; when
    every legal neighbour has been evaluated without improvement the climb
    restarts from a random architecture.
    """

    multi_objective = True

    def navigate(self, ctx: RoundContext) -> Strategy:
        if ctx.multi_objective:
            return self._pareto_local(ctx)
        mem = ctx.memory
        center = mem.get("center")
        if center is not None:
            incumbent = ctx.history.get(center)
            value = incumbent.value if incumbent else None
            around = set(ctx.space.neighbours(center))
            for t in ctx.history.in_round(ctx.round - 1):
                if t.ok and t.ncode in around and ctx.better(t.value, value):
                    center, value = t.ncode, t.value
                    mem["moves"] = mem.get("moves", 0) + 1
                    break
        elif mem.get("restarting"):
            # Last round evaluated the restart point: climb from it.
            started = [t for t in ctx.history.in_round(ctx.round - 1) if t.ok]
            if started:
                center = started[0].ncode
        mem["restarting"] = False
        if center is not None:
            frontier = ctx.one_per_network(c for c in ctx.space.neighbours(center) if ctx.is_new_and_legal(c))
            if frontier:
                mem["center"] = center
                return Strategy(
                    summary=f"evaluate unseen neighbours of the incumbent {center} until one beats it",
                    example_codes=[center],
                    plan={"phase": "climb", "center": center},
                )
            mem["restarts"] = mem.get("restarts", 0) + 1
        mem["center"] = None
        mem["restarting"] = True
        return Strategy(
            summary="local optimum reached (or first round): restart from a random architecture",
            plan={"phase": "restart"},
        )


    @staticmethod
    def _pareto_local(ctx: RoundContext) -> Strategy:
        """Several objectives: climb from the most promising point of the current front that still has unseen
        neighbours (agents/fronts.py); restart at random when none has."""
        mem = ctx.memory
        front = front_by_promise(ctx)
        for center in (t.ncode for t in front):
            if any(ctx.is_new_and_legal(c) for c in ctx.space.neighbours(center)):
                if center != mem.get("center"):
                    mem["moves"] = mem.get("moves", 0) + 1
                mem["center"] = center
                return Strategy(
                    summary=f"evaluate unseen neighbours of {center}, a point of the Pareto front of "
                            f"{len(front)}",
                    example_codes=[center],
                    plan={"phase": "climb", "center": center},
                )
        mem["center"] = None
        if front:
            mem["restarts"] = mem.get("restarts", 0) + 1
        return Strategy(summary="every point of the front is surrounded by evaluated architectures (or first "
                                "round): a random architecture", plan={"phase": "restart"})


class NeighbourGenerator(Generator):
    """Unseen legal neighbours of the incumbent in random order; a random code on restart."""

    def generate(self, strategy: Strategy, n: int, ctx: RoundContext) -> list[str]:
        rng = ctx.rng("generator")
        center = strategy.plan.get("center")
        if strategy.plan.get("phase") != "climb" or center is None:
            return sample_new(ctx, 1, rng)
        frontier = ctx.one_per_network(c for c in ctx.space.neighbours(center) if ctx.is_new_and_legal(c))
        rng.shuffle(frontier)
        return frontier[:n]


def random_search() -> SearchStrategy:
    return SearchStrategy("random", UniformNavigator(), UniformGenerator(), 1, "uniform random sampling")


def regularized_evolution(population: int = 10, tournament: int = 5) -> SearchStrategy:
    return SearchStrategy(
        "rea",
        EvolutionNavigator(population, tournament),
        MutationGenerator(),
        1,
        f"regularized evolution (population {population}, tournament {tournament}, one-decision mutation)",
    )


def local_search() -> SearchStrategy:
    return SearchStrategy(
        "local",
        LocalSearchNavigator(),
        NeighbourGenerator(),
        1,
        "first-improvement local search with random restarts",
    )
