"""What the strategies need to search a Pareto front: an order of the trials by front and promise.

Trials are ordered by non-dominated front; within a front, first those that
beat the *focus point* in every objective, by the hypervolume each adds
alone (its exclusive contribution), then the others by NSGA-II's crowding
distance. The focus point is the run's hypervolume reference when the user
gave one (``--hv-ref``), else per objective the space's median where the run
knows the objective before evaluation (a table's parameters, FLOPs and
latencies), else the median over the trials evaluated so far. It keeps a
search from spending its budget on the far ends of a front (a network with
no parameters and no accuracy is on the front of accuracy against
parameters, and useless). The LLM roles read the front in this order too
(:mod:`collm_nas.agents.digest`), and LM-Searcher's LLM ranker a trial's
place on it (:func:`front_rewarded`).

:func:`survivors` is the elitist selection of the ``k`` best by that order
(NSGA-II with the hypervolume tie-break of SMS-EMOA); it peels off only as
many fronts as it needs.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import lru_cache

from collm_nas.core import Objectives, RoundContext, SearchSpace, Trial
from collm_nas.core.pareto import contributions, crowding_distance, median_point, non_dominated, non_dominated_sort

Point = tuple[float, ...]


def scored(objectives: Objectives, trials: Sequence[Trial]) -> list[tuple[Trial, Point]]:
    """The successful trials that carry every objective, with their points."""
    return [(t, p) for t in trials if (p := objectives.point(t)) is not None]


def focus_point(objectives: Objectives, points: Sequence[Point], given: Sequence[float] | None = None,
                known: dict[str, float] | None = None) -> Point:
    """Where a search looks (larger-is-better): the user's reference (metric units, converted), else per
    objective the space's median where it is known before evaluation (``known``: a table's costs), else the
    median over the trials."""
    if given:
        return objectives.signed(given)
    focus = list(median_point(points))
    for k, objective in enumerate(objectives.items):
        if known and objective.metric in known:
            focus[k] = objective.direction.sign() * known[objective.metric]
    return tuple(focus)


# Architectures drawn to estimate the space's median of the objectives known before evaluation.
MEDIAN_SAMPLE = 1000


@lru_cache(maxsize=32)
def _space_medians(space: SearchSpace, resources: Callable[[str], dict[str, float]], is_legal: Callable[[str], bool],
                   seed: int, metrics: tuple[str, ...]) -> tuple[tuple[str, float], ...]:
    rng = random.Random(f"{seed}/focus")
    figures = []
    for _ in range(MEDIAN_SAMPLE * 5):
        code = space.sample(rng)
        if is_legal(code):
            figures.append(resources(code))
            if len(figures) >= MEDIAN_SAMPLE:
                break
    return tuple((m, statistics.median(f[m] for f in figures)) for m in metrics
                 if figures and all(m in f for f in figures))


def space_medians(ctx: RoundContext) -> dict[str, float]:
    """The space's median of each objective the run knows before evaluation (the validity checker's
    resources), estimated from a fixed sample of legal architectures (seeded by the run)."""
    resources = ctx.checker.resources if ctx.checker is not None else None
    if resources is None or ctx.objectives is None:
        return {}
    return dict(_space_medians(ctx.space, resources, ctx.is_legal, ctx.seed, ctx.objectives.metrics))


def run_focus(ctx: RoundContext, points: Sequence[Point]) -> Point:
    """:func:`focus_point` of a round."""
    return focus_point(ctx.objectives, points, ctx.hv_reference, space_medians(ctx))


def order_front(points: Sequence[Point], front: Sequence[int], focus: Point) -> list[int]:
    """``front`` (indices into ``points``) best first: exclusive hypervolume beyond ``focus``, then crowding."""
    inside = [i for i in front if all(x > f for x, f in zip(points[i], focus))]
    gains = dict(zip(inside, contributions([points[i] for i in inside], focus)))
    crowd = crowding_distance(points, front)
    return (sorted(inside, key=lambda i: (-gains[i], -crowd[i], i))
            + sorted((i for i in front if i not in gains), key=lambda i: (-crowd[i], i)))


def survivors(ctx: RoundContext, k: int) -> list[Trial]:
    """The ``k`` best trials of the run by front, then promise (see the module doc), best first."""
    left = scored(ctx.objectives, ctx.history.trials())
    if not left:
        return []
    focus = run_focus(ctx, [p for _, p in left])
    chosen: list[Trial] = []
    while left and len(chosen) < k:
        points = [p for _, p in left]
        front = non_dominated(points)
        chosen += [left[i][0] for i in order_front(points, front, focus)][: k - len(chosen)]
        taken = set(front)
        left = [item for i, item in enumerate(left) if i not in taken]
    return chosen


def front_by_promise(ctx: RoundContext) -> list[Trial]:
    """The run's current front, most promising first (see the module doc)."""
    items = scored(ctx.objectives, ctx.history.trials())
    if not items:
        return []
    points = [p for _, p in items]
    return [items[i][0] for i in order_front(points, non_dominated(points), run_focus(ctx, points))]


def front_rewarded(objectives: Objectives, trials: Sequence[Trial]) -> list[Trial]:
    """The trials with their value replaced by their place on the front: 1 on the front, then down by front
    to 0 on the last one (failed trials as they are). One number an LLM ranker can read as a reward."""
    items = scored(objectives, trials)
    fronts = non_dominated_sort([p for _, p in items])
    place: dict[str, float] = {}
    for k, front in enumerate(fronts):
        for i in front:
            place[items[i][0].ncode] = 1.0 - k / max(1, len(fronts) - 1)
    return [replace(t, value=place[t.ncode]) if t.ncode in place else t for t in trials]
