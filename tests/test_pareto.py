"""Dominance, non-dominated sorting, crowding distance and hypervolume: hand-computed cases, and brute force
on random points."""

from __future__ import annotations

import itertools
import math
import random
import statistics

import pytest

from collm_nas.core.pareto import (crowding_distance, dominates, hypervolume, non_dominated, non_dominated_sort,
                                   ranked_by_front_and_crowding)


def test_dominance() -> None:
    assert dominates((2, 2), (1, 2)) and dominates((2, 3), (1, 1))
    assert not dominates((2, 2), (2, 2))  # equal: neither
    assert not dominates((3, 1), (1, 3)) and not dominates((1, 3), (3, 1))  # a trade-off
    assert dominates((1, 1, 2), (1, 1, 1)) and not dominates((1, 1, 1), (1, 1, 2))


def test_sorting_by_hand() -> None:
    points = [(1, 5), (2, 4), (3, 3), (2, 2), (1, 1), (3, 3), (0, 6)]
    assert non_dominated_sort(points) == [[0, 1, 2, 5, 6], [3], [4]]
    assert non_dominated(points) == [0, 1, 2, 5, 6]
    assert non_dominated([]) == [] and non_dominated_sort([]) == []


def test_crowding_by_hand() -> None:
    points = [(0.0, 4.0), (1.0, 3.0), (3.0, 1.0), (4.0, 0.0)]
    crowd = crowding_distance(points, [0, 1, 2, 3])
    assert crowd[0] == crowd[3] == math.inf
    # Point 1: neighbours 0 and 2, gaps 3/4 in x and 3/4 in y; point 2 likewise.
    assert crowd[1] == pytest.approx(1.5) and crowd[2] == pytest.approx(1.5)
    assert crowding_distance(points, [1, 2]) == {1: math.inf, 2: math.inf}
    # The crowded middle point of three comes last within its front.
    assert ranked_by_front_and_crowding([(0, 2), (1, 1.05), (2, 0), (0, 0)]) == [0, 2, 1, 3]


def test_hypervolume_by_hand() -> None:
    assert hypervolume([(3, 1), (2, 2), (1, 3)], (0, 0)) == pytest.approx(6.0)
    assert hypervolume([(2, 2)], (0, 0)) == 4.0
    assert hypervolume([(2, 2), (1, 1)], (0, 0)) == 4.0  # a dominated point adds nothing
    assert hypervolume([(2, 2), (-1, 5)], (0, 0)) == 4.0  # a point beyond the reference counts for nothing
    assert hypervolume([], (0, 0)) == 0.0
    assert hypervolume([(1, 1, 1)], (0, 0, 0)) == 1.0
    # Two boxes 2x1x1 and 1x2x1 overlapping in a 1x1x1 cube, and one 1x1x2 on top of the cube.
    assert hypervolume([(2, 1, 1), (1, 2, 1), (1, 1, 2)], (0, 0, 0)) == pytest.approx(4.0)
    assert hypervolume([(5.0,)], (1.0,)) == 4.0
    with pytest.raises(ValueError, match="1 to 3 objectives"):
        hypervolume([(1, 1, 1, 1)], (0, 0, 0, 0))


def _brute_force_hypervolume(points: list[tuple[float, ...]], ref: tuple[float, ...]) -> float:
    """Sum the cells of the grid of all coordinates that some point dominates."""
    axes = [sorted({ref[k], *(p[k] for p in points if p[k] > ref[k])}) for k in range(len(ref))]
    total = 0.0
    for cell in itertools.product(*(range(len(a) - 1) for a in axes)):
        upper = [axes[k][c + 1] for k, c in enumerate(cell)]
        if any(all(p[k] >= upper[k] for k in range(len(ref))) for p in points):
            total += math.prod(axes[k][c + 1] - axes[k][c] for k, c in enumerate(cell))
    return total


@pytest.mark.parametrize("dims", [2, 3])
def test_hypervolume_against_brute_force(dims: int) -> None:
    rng = random.Random(dims)
    for case in range(40):
        n = rng.randint(1, 12)
        # Repeated coordinates on purpose (rounded), some points beyond the reference.
        points = [tuple(round(rng.uniform(-0.2, 1.0), 1) for _ in range(dims)) for _ in range(n)]
        ref = tuple(0.0 for _ in range(dims))
        assert hypervolume(points, ref) == pytest.approx(_brute_force_hypervolume(points, ref)), (case, points)


def test_sorting_against_brute_force() -> None:
    rng = random.Random(7)
    for dims in (2, 3):
        for _ in range(30):
            points = [tuple(rng.randint(0, 5) for _ in range(dims)) for _ in range(rng.randint(1, 25))]
            fronts = non_dominated_sort(points)
            assert non_dominated(points) == fronts[0]
            assert sorted(i for f in fronts for i in f) == list(range(len(points)))
            for k, front in enumerate(fronts):
                later = [i for f in fronts[k:] for i in f]
                # Nothing in this front or a later one dominates a point of this front ...
                assert not any(dominates(points[j], points[i]) for i in front for j in later)
                # ... and every point of a later front is dominated by one of the front before it.
                if k:
                    assert all(any(dominates(points[j], points[i]) for j in fronts[k - 1]) for i in front)


def test_contributions_and_median_point() -> None:
    from collm_nas.core.pareto import contributions, median_point

    points = [(3, 1), (2, 2), (1, 3), (1, 1)]
    # Without (2, 2) the area drops from 6 to 5; each end loses 1; the dominated point nothing.
    assert contributions(points, (0, 0)) == pytest.approx([1.0, 1.0, 1.0, 0.0])
    assert median_point(points) == (1.5, 1.5)


def test_improvements_2d_against_hypervolume_differences() -> None:
    from collm_nas.core.pareto import improvements_2d

    rng = random.Random(3)
    for _ in range(30):
        front = [(rng.uniform(-0.2, 1), rng.uniform(-0.2, 1)) for _ in range(rng.randint(0, 8))]
        candidates = [(rng.uniform(-0.2, 1.2), rng.uniform(-0.2, 1.2)) for _ in range(10)]
        got = improvements_2d(front, candidates, (0.0, 0.0))
        want = [hypervolume(front + [c], (0, 0)) - hypervolume(front, (0, 0)) for c in candidates]
        assert got == pytest.approx(want, abs=1e-12)


def test_expected_improvements_3d_against_sampling_and_exact_differences() -> None:
    """Three objectives, one uncertain (any axis), two known: the exact expectation against the mean of many
    draws of the plain hypervolume difference; a zero deviation is that difference itself."""
    from collm_nas.core.pareto import expected_improvements_3d

    rng = random.Random(7)
    reference = (0.0, 0.1, -0.1)
    for _ in range(6):
        front = [tuple(rng.uniform(-0.2, 1) for _ in range(3)) for _ in range(rng.randint(0, 9))]
        base = hypervolume(front, reference)
        known = [(rng.uniform(-0.2, 1.2), rng.uniform(-0.2, 1.2)) for _ in range(3)]
        mean = [rng.uniform(-0.2, 1.2) for _ in range(3)]
        sd = [rng.uniform(0.01, 0.4) for _ in range(3)]
        for axis in (0, 1, 2):
            def point(k: tuple[float, float], x: float) -> tuple[float, ...]:
                p = list(k)
                p.insert(axis, x)
                return tuple(p)

            got = expected_improvements_3d(front, known, mean, sd, reference, uncertain_axis=axis)
            exact = expected_improvements_3d(front, known, mean, [0.0] * 3, reference, uncertain_axis=axis)
            for g, e, k, m, s in zip(got, exact, known, mean, sd):
                assert e == pytest.approx(hypervolume(front + [point(k, m)], reference) - base, abs=1e-12)
                draws = [rng.gauss(m, s) for _ in range(3000)]
                want = statistics.fmean(hypervolume(front + [point(k, d)], reference) - base for d in draws)
                assert g == pytest.approx(want, abs=4 * s / 55 + 1e-9), (front, k, m, s, axis)


def test_expected_improvements_2d_against_sampling() -> None:
    """Exact expected hypervolume improvement (one coordinate known) against the mean of many draws, either
    axis known; a zero deviation is the plain improvement of the mean."""
    from collm_nas.core.pareto import expected_improvements_2d, improvements_2d

    rng = random.Random(5)
    for _ in range(12):
        front = [(rng.uniform(-0.2, 1), rng.uniform(-0.2, 1)) for _ in range(rng.randint(0, 6))]
        known = [rng.uniform(-0.2, 1.2) for _ in range(4)]
        mean = [rng.uniform(-0.2, 1.2) for _ in range(4)]
        sd = [rng.uniform(0.01, 0.4) for _ in range(4)]
        for axis in (0, 1):
            got = expected_improvements_2d(front, known, mean, sd, (0.0, 0.0), known_axis=axis)
            for g, k, m, s in zip(got, known, mean, sd):
                draws = [rng.gauss(m, s) for _ in range(4000)]
                points = [(k, d) if axis == 0 else (d, k) for d in draws]
                want = statistics.fmean(improvements_2d(front, points, (0.0, 0.0)))
                assert g == pytest.approx(want, abs=4 * s / 60 + 1e-9), (front, k, m, s, axis)
        plain = improvements_2d(front, list(zip(mean, known)), (0.0, 0.0))
        assert expected_improvements_2d(front, known, mean, [0.0] * 4, (0.0, 0.0)) == pytest.approx(plain, abs=1e-12)
