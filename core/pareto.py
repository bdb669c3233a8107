"""Pareto dominance, non-dominated sorting, crowding distance and hypervolume.

Everything here works on points in *larger-is-better* form: a tuple of floats
per candidate, one per objective, where each minimised metric has been negated
(:meth:`collm_nas.core.objective.Objectives.point` does that). The reference
point of a hypervolume is in the same form, and only the part of the space
that a point dominates *and* that dominates the reference point counts.

The algorithms are the textbook ones (Deb et al. 2002 for the sorting and the
crowding distance; a sweep in two dimensions and slicing along the third for
the hypervolume), written for the sizes a search produces: a few thousand
points, two or three objectives.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

Point = tuple[float, ...]


def dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether ``a`` is at least as good as ``b`` everywhere and better somewhere."""
    better = False
    for x, y in zip(a, b, strict=True):
        if x < y:
            return False
        if x > y:
            better = True
    return better


def non_dominated(points: Sequence[Sequence[float]]) -> list[int]:
    """Indices of the points no other point dominates, in their order (equal points all stay).

    In descending lexicographic order a point comes after every point that
    dominates it, so each point is checked against the front found so far
    only: O(n x front size).
    """
    front: list[int] = []
    for i in sorted(range(len(points)), key=lambda i: tuple(-x for x in points[i])):
        if not any(dominates(points[j], points[i]) for j in front):
            front.append(i)
    return sorted(front)


def non_dominated_sort(points: Sequence[Sequence[float]]) -> list[list[int]]:
    """The fronts, best first: front 0 holds the non-dominated points, front 1 those only front 0 dominates, …

    Each front lists indices in ascending order.
    """
    n = len(points)
    beaten_by = [0] * n  # how many points dominate i
    beats: list[list[int]] = [[] for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            if dominates(points[i], points[j]):
                beats[i].append(j)
                beaten_by[j] += 1
            elif dominates(points[j], points[i]):
                beats[j].append(i)
                beaten_by[i] += 1
    fronts: list[list[int]] = []
    current = [i for i in range(n) if beaten_by[i] == 0]
    while current:
        fronts.append(sorted(current))
        following = []
        for i in current:
            for j in beats[i]:
                beaten_by[j] -= 1
                if beaten_by[j] == 0:
                    following.append(j)
        current = following
    return fronts


def crowding_distance(points: Sequence[Sequence[float]], front: Sequence[int]) -> dict[int, float]:
    """NSGA-II's crowding distance of each point of ``front`` (indices into ``points``).

    The extremes of every objective get infinity; the others the sum over
    objectives of the gap between their neighbours, divided by the front's
    range in that objective. Fronts of one or two points are all extremes.
    """
    distance = {i: 0.0 for i in front}
    if len(front) <= 2:
        return {i: math.inf for i in front}
    for k in range(len(points[front[0]])):
        order = sorted(front, key=lambda i: (points[i][k], i))
        low, high = points[order[0]][k], points[order[-1]][k]
        distance[order[0]] = distance[order[-1]] = math.inf
        if high == low:
            continue
        for left, mid, right in zip(order, order[1:], order[2:]):
            if distance[mid] != math.inf:
                distance[mid] += (points[right][k] - points[left][k]) / (high - low)
    return distance


def ranked_by_front_and_crowding(points: Sequence[Sequence[float]]) -> list[int]:
    """All indices, best first: by front, then by crowding distance (largest first), then by index."""
    order: list[int] = []
    for front in non_dominated_sort(points):
        crowd = crowding_distance(points, front)
        order.extend(sorted(front, key=lambda i: (-crowd[i], i)))
    return order


def hypervolume(points: Sequence[Sequence[float]], reference: Sequence[float]) -> float:
    """The volume of the region the points dominate and that dominates ``reference`` (exact; 1 to 3 objectives)."""
    dims = len(reference)
    inside = [tuple(float(x) for x in p) for p in points
              if len(p) == dims and all(x > r for x, r in zip(p, reference))]
    if not inside:
        return 0.0
    ref = tuple(float(r) for r in reference)
    if dims == 1:
        return max(p[0] for p in inside) - ref[0]
    if dims == 2:
        return _hypervolume_2d(inside, ref)
    if dims == 3:
        return _hypervolume_3d(inside, ref)
    raise ValueError(f"hypervolume is computed for 1 to 3 objectives, not {dims}")


def contributions(points: Sequence[Sequence[float]], reference: Sequence[float]) -> list[float]:
    """Each point's exclusive hypervolume: what the hypervolume loses without it (0 for a dominated point)."""
    whole = hypervolume(points, reference)
    return [whole - hypervolume([p for j, p in enumerate(points) if j != i], reference)
            for i in range(len(points))]


def improvements_2d(front: Sequence[Sequence[float]], candidates: Sequence[Sequence[float]],
                    reference: Sequence[float]) -> list[float]:
    """The hypervolume each candidate would add to ``front`` alone (two objectives), all at once.

    The front's dominated region is a staircase over the first objective; a
    candidate adds, over each step between the reference and its first
    coordinate, the part of its height above the step. Vectorised over the
    candidates (with torch): a pool of thousands costs milliseconds.
    """
    import torch

    r1, r2 = float(reference[0]), float(reference[1])
    steps = sorted(((float(p[0]), float(p[1])) for p in front if p[0] > r1 and p[1] > r2), reverse=True)
    # Breakpoints x_0 > x_1 > ... and the staircase height over [x_{j+1}, x_j).
    edges, heights, best = [], [], r2
    for x, y in steps:
        if y > best:
            edges.append(x)
            heights.append(best)
            best = y
    edges.append(r1)
    heights.append(best)
    # Segment j spans [edges[j], edges[j-1]) with height heights[j] (edges[-1] = +inf side handled by j = 0).
    lo = torch.tensor(edges, dtype=torch.float64)
    hi = torch.tensor([math.inf] + edges[:-1], dtype=torch.float64)
    h = torch.tensor(heights, dtype=torch.float64)
    q = torch.tensor([[float(c[0]), float(c[1])] for c in candidates], dtype=torch.float64).reshape(-1, 2)
    width = (torch.minimum(q[:, :1], hi) - lo).clamp_min(0.0)
    height = (q[:, 1:] - h).clamp_min(0.0)
    return (width * height).sum(1).tolist()


def expected_improvements_2d(front: Sequence[Sequence[float]], known, mean, sd, reference: Sequence[float],
                             known_axis: int = 1) -> list[float]:
    """The expected hypervolume each candidate would add to ``front`` alone (two objectives), exactly, when
    one coordinate of every candidate is known (``known``, on axis ``known_axis``) and the other is normal
    with ``mean`` and standard deviation ``sd`` (a surrogate's prediction); the three are sequences of
    floats or 1-D tensors, one entry per candidate.

    Over the known axis, between the reference and the candidate's known value, the front's dominated region
    is a staircase; on each step of length ``l`` and height ``b`` the candidate adds ``l * max(0, X - b)``.
    The expectation of that is ``l`` times the expected improvement of ``X`` over ``b``, so the sum over the
    steps is exact (no sampling). A zero ``sd`` gives :func:`improvements_2d` of the mean.
    """
    import torch

    u = 1 - known_axis  # the uncertain axis
    r_known, r_u = float(reference[known_axis]), float(reference[u])
    inside = sorted(((float(p[known_axis]), float(p[u])) for p in front if p[known_axis] > r_known and p[u] > r_u),
                    reverse=True)
    # Steps along the known axis, from its far end down to the reference: (low end, high end, height).
    lows, highs, heights, top, height = [], [], [], math.inf, r_u
    for k, h in inside:
        if h > height:
            lows.append(k)
            highs.append(top)
            heights.append(height)
            top, height = k, h
    lows.append(r_known)
    highs.append(top)
    heights.append(height)
    lo = torch.tensor(lows, dtype=torch.float64)
    hi = torch.tensor(highs, dtype=torch.float64)
    b = torch.tensor(heights, dtype=torch.float64)
    x = torch.as_tensor(known, dtype=torch.float64).reshape(-1, 1)
    mu = torch.as_tensor(mean, dtype=torch.float64).reshape(-1, 1)
    sigma = torch.as_tensor(sd, dtype=torch.float64).clamp_min(0.0).reshape(-1, 1)
    length = (torch.minimum(x, hi) - lo).clamp_min(0.0)
    gap = mu - b
    safe = sigma.clamp_min(1e-300)
    z = gap / safe
    normal = torch.distributions.Normal(torch.zeros((), dtype=torch.float64), torch.ones((), dtype=torch.float64))
    gain = torch.where(sigma > 0, gap * normal.cdf(z) + sigma * torch.exp(normal.log_prob(z)), gap.clamp_min(0.0))
    return (length * gain.clamp_min(0.0)).sum(1).tolist()


def expected_improvements_3d(front: Sequence[Sequence[float]], known, mean, sd, reference: Sequence[float],
                             uncertain_axis: int = 0) -> list[float]:
    """The expected hypervolume each candidate would add to ``front`` alone (three objectives), exactly, when
    two coordinates of every candidate are known (``known``: one row of two per candidate, the axes other than
    ``uncertain_axis`` in order) and the third is normal with ``mean`` and standard deviation ``sd``.

    Along the uncertain axis, the part of the candidate's box (from the reference to its known corner) that
    the front leaves free is a step function ``A(t)`` of the level ``t``: at level ``t`` only front points
    above ``t`` cover it. The gain of a value ``X`` is the integral of ``A`` up to ``X``, so its expectation
    is the sum over the steps of ``A`` times the integral of ``P(X > t)`` over the step, which is a
    difference of two expected improvements of ``X`` (no sampling). A zero ``sd`` gives the exact hypervolume
    improvement of the mean. Vectorised over the candidates (with torch).
    """
    import torch

    axes = [k for k in range(3) if k != uncertain_axis]
    r_u = float(reference[uncertain_axis])
    r1, r2 = float(reference[axes[0]]), float(reference[axes[1]])
    pts = [(float(p[uncertain_axis]), float(p[axes[0]]), float(p[axes[1]])) for p in front]
    pts = [p for p in pts if p[0] > r_u and p[1] > r1 and p[2] > r2]
    levels = [r_u, *sorted({p[0] for p in pts})]
    q = torch.as_tensor(known, dtype=torch.float64).reshape(-1, 2)
    box = (q[:, 0] - r1).clamp_min(0.0) * (q[:, 1] - r2).clamp_min(0.0)
    mu = torch.as_tensor(mean, dtype=torch.float64).reshape(-1)
    sigma = torch.as_tensor(sd, dtype=torch.float64).clamp_min(0.0).reshape(-1)
    normal = torch.distributions.Normal(torch.zeros((), dtype=torch.float64), torch.ones((), dtype=torch.float64))

    def improvement_over(level: float) -> torch.Tensor:  # E[max(0, X - level)]
        gap = mu - level
        z = gap / sigma.clamp_min(1e-300)
        return torch.where(sigma > 0, gap * normal.cdf(z) + sigma * torch.exp(normal.log_prob(z)),
                           gap.clamp_min(0.0))

    total = torch.zeros(q.shape[0], dtype=torch.float64)
    below = improvement_over(levels[0])
    for i, level in enumerate(levels):
        above = improvement_over(levels[i + 1]) if i + 1 < len(levels) else torch.zeros_like(below)
        # The front points that still cover the box between this level and the next: those at or above the next.
        cover = [(a, b) for u, a, b in pts if i + 1 < len(levels) and u >= levels[i + 1]]
        covered = torch.zeros_like(box)
        if cover:
            # Their dominated region over the first known axis is a staircase: over [lo_j, hi_j) its height is
            # the best second coordinate of the points at or beyond lo_j.
            lows, highs, heights, top, height = [], [], [], math.inf, r2
            for a, b in sorted(cover, reverse=True):
                if b > height:
                    lows.append(a)
                    highs.append(top)
                    heights.append(height)
                    top, height = a, b
            lows.append(r1)
            highs.append(top)
            heights.append(height)
            lo = torch.tensor(lows, dtype=torch.float64)
            hi = torch.tensor(highs, dtype=torch.float64)
            h = torch.tensor(heights, dtype=torch.float64)
            width = (torch.minimum(q[:, :1], hi) - lo).clamp_min(0.0)
            tall = (torch.minimum(h, q[:, 1:]) - r2).clamp_min(0.0)
            covered = (width * tall).sum(1)
        total += (box - covered).clamp_min(0.0) * (below - above)
        below = above
    return total.tolist()


def median_point(points: Sequence[Sequence[float]]) -> tuple[float, ...]:
    """The median of each objective over the points (a reference point that follows a search)."""
    return tuple(statistics.median(p[k] for p in points) for k in range(len(points[0])))


def _hypervolume_2d(points: list[Point], ref: Sequence[float]) -> float:
    """Sweep along the first objective, best first, adding the strip each new height opens."""
    total = 0.0
    height = ref[1]
    for x, y in sorted(points, key=lambda p: (-p[0], -p[1])):
        if y > height:
            total += (x - ref[0]) * (y - height)
            height = y
    return total


def _hypervolume_3d(points: list[Point], ref: Sequence[float]) -> float:
    """Slice along the third objective: between consecutive levels the dominated area is a 2-D hypervolume."""
    order = sorted(points, key=lambda p: -p[2])
    total = 0.0
    active: list[Point] = []
    for i, p in enumerate(order):
        active.append((p[0], p[1]))
        level_below = order[i + 1][2] if i + 1 < len(order) else ref[2]
        if p[2] > level_below:
            total += _hypervolume_2d(active, ref[:2]) * (p[2] - level_below)
    return total
