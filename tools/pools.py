"""Candidate pools: small lists of legal, not yet evaluated codes for a ranker to choose from.

A ranker (LM-Searcher style) does not write architectures itself; it picks
the most promising one out of a pool. This module fills such pools in three
ways:

* :func:`sample_pool`: pruning-based subspace sampling. A *pruned subspace*
  keeps a random part of every decision's options (:func:`prune_subspace`);
  codes are drawn uniformly inside it. Codes drawn from one subspace share a
  "theme" (some options are off), and redrawing the subspace whenever it
  stops giving new codes keeps the pool diverse across calls.
* :func:`mutation_pool`: codes one or two decisions away from parents (for
  example the best trials so far), i.e. a local neighbourhood.
* :func:`proposal_pool`: screens codes proposed elsewhere (a Generator, a
  user) into a pool.

Every pool is a plain ``list[str]`` of distinct canonical codes that pass
``is_allowed`` and are not in ``exclude``. All randomness comes from the
``random.Random`` passed in, so a pool is reproducible from its seed.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from collm_nas.core.space import SearchSpace

__all__ = [
    "DEFAULT_ENUMERATE_LIMIT",
    "Subspace",
    "mutation_pool",
    "prune_subspace",
    "proposal_pool",
    "sample_from_subspace",
    "sample_pool",
    "subspace_size",
]

# position -> option indices that stay in the subspace
Subspace = dict[int, tuple[int, ...]]
AllowFn = Callable[[str], bool]

# Spaces with at most this many codes (size_bound) are enumerated when sampling falls short.
DEFAULT_ENUMERATE_LIMIT = 200_000
# Consecutive draws without a new code after which a subspace counts as dry.
_DRY_AFTER = 24


def _allow_fn(is_allowed: AllowFn | Any) -> AllowFn:
    """A plain predicate; a :class:`ValidityChecker` (anything with ``is_valid``) also works."""
    check = getattr(is_allowed, "is_valid", None)
    if callable(check):
        return check
    if not callable(is_allowed):
        raise TypeError("is_allowed must be a callable code -> bool or an object with is_valid")
    return is_allowed


def _cached(allow: AllowFn) -> AllowFn:
    verdicts: dict[str, bool] = {}

    def check(code: str) -> bool:
        verdict = verdicts.get(code)
        if verdict is None:
            verdict = verdicts[code] = bool(allow(code))
        return verdict

    return check


def _check_n(n: int) -> None:
    if n < 0:
        raise ValueError(f"a pool size must not be negative, got {n}")


# ============================================================ subspaces
def prune_subspace(
    space: SearchSpace, rng: random.Random, prune_prob: float = 0.5, keep_min: int = 1
) -> Subspace:
    """A random pruned subspace: for each decision, the option indices that survive.

    Each option is dropped independently with probability ``prune_prob``;
    when fewer than ``keep_min`` survive (capped at the decision's option
    count), random dropped options are put back. Survivors are sorted.
    """
    if not 0.0 <= prune_prob <= 1.0:
        raise ValueError(f"prune_prob must lie in [0, 1], got {prune_prob}")
    if keep_min < 1:
        raise ValueError(f"keep_min must be at least 1, got {keep_min}")
    sub: Subspace = {}
    for pos, d in enumerate(space.decisions):
        kept: list[int] = []
        dropped: list[int] = []
        for idx in range(len(d.options)):
            (dropped if rng.random() < prune_prob else kept).append(idx)
        need = min(keep_min, len(d.options)) - len(kept)
        if need > 0:
            kept += rng.sample(dropped, need)
        sub[pos] = tuple(sorted(kept))
    return sub


def subspace_size(sub: Subspace) -> int:
    """Product of the surviving option counts (an upper bound under conditions)."""
    size = 1
    for options in sub.values():
        size *= len(options)
    return size


def sample_from_subspace(space: SearchSpace, sub: Subspace, rng: random.Random) -> str:
    """One canonical code whose active decisions take options of ``sub``.

    Inactive decisions are written ``0`` whatever the subspace says, as NCode wants.
    """
    return space.canonical([rng.choice(sub[pos]) for pos in range(space.length)])


# ============================================================ sampled pools
def sample_pool(
    space: SearchSpace,
    is_allowed: AllowFn,
    n: int,
    rng: random.Random,
    *,
    exclude: Iterable[str] = (),
    prune_prob: float = 0.5,
    keep_min: int = 1,
    max_tries: int | None = None,
    enumerate_limit: int = DEFAULT_ENUMERATE_LIMIT,
) -> list[str]:
    """Up to ``n`` distinct, allowed, unseen codes drawn from pruned subspaces.

    A subspace is drawn with :func:`prune_subspace` and codes are sampled
    inside it; when it gives no new code ``_DRY_AFTER`` times in a row (or
    cannot hold more new codes), a fresh subspace is drawn. After
    ``max_tries`` draws (default ``20 * n + 200``) a space of at most
    ``enumerate_limit`` codes is enumerated and the pool filled at random from
    what is left, so fewer than ``n`` codes come back only when the space has
    no more allowed, unseen codes. Larger spaces may return fewer after
    ``max_tries`` draws.
    """
    _check_n(n)
    if n == 0:
        return []
    allow = _cached(_allow_fn(is_allowed))
    taken = set(exclude)
    pool: list[str] = []
    tries = max_tries if max_tries is not None else 20 * n + 200
    sub: Subspace | None = None
    dry = 0
    seen_here: set[str] = set()
    for _ in range(tries):
        if len(pool) >= n:
            break
        if sub is None or dry >= _DRY_AFTER or len(seen_here) >= subspace_size(sub):
            sub = prune_subspace(space, rng, prune_prob, keep_min)
            dry = 0
            seen_here = set()
        code = sample_from_subspace(space, sub, rng)
        seen_here.add(code)
        if code in taken or not allow(code):
            dry += 1
            continue
        taken.add(code)
        pool.append(code)
        dry = 0
    if len(pool) < n and space.size_bound() <= enumerate_limit:
        rest = [c for c in space.enumerate() if c not in taken and allow(c)]
        rng.shuffle(rest)
        pool += rest[: n - len(pool)]
    return pool


# ============================================================ mutation pools
def _parent_codes(parents: Iterable[Any]) -> list[str]:
    codes = []
    for p in parents:
        code = p if isinstance(p, str) else getattr(p, "ncode", None)
        if isinstance(code, str) and code not in codes:
            codes.append(code)
    return codes


def mutation_pool(
    space: SearchSpace,
    is_allowed: AllowFn,
    parents: Sequence[Any],
    n: int,
    rng: random.Random,
    exclude: Iterable[str] = (),
    *,
    one_step_share: float = 0.5,
    max_tries: int | None = None,
    max_checks: int = 200_000,
) -> list[str]:
    """Up to ``n`` allowed, unseen codes one or two decisions away from ``parents``.

    ``parents`` are codes (or objects with ``.ncode``, such as trials) that
    must be well-formed codes of ``space``. About ``one_step_share`` of the
    pool comes from single-decision changes (all of them are considered, in
    random order), the rest from random two-step mutations of parents taken
    in turn; whichever kind runs short is made up by the other. Two-step
    neighbours are finally walked exhaustively (at most ``max_checks``
    codes looked at), so fewer than ``n`` come back only when the
    neighbourhood is exhausted or too large to walk. Parents themselves
    are never in the pool. The result is shuffled.
    """
    _check_n(n)
    codes = _parent_codes(parents)
    if n == 0 or not codes:
        return []
    allow = _cached(_allow_fn(is_allowed))
    taken = set(exclude) | set(codes)
    pool: list[str] = []

    def offer(code: str) -> bool:
        if code in taken:
            return False
        taken.add(code)  # screened once, kept or not
        if allow(code):
            pool.append(code)
            return True
        return False

    one_step: list[str] = []
    known = set(codes)
    for parent in codes:
        for code in space.neighbours(parent):
            if code not in known:
                known.add(code)
                one_step.append(code)
    rng.shuffle(one_step)

    quota = min(n, round(n * one_step_share))
    next_one = 0
    while len(pool) < quota and next_one < len(one_step):
        offer(one_step[next_one])
        next_one += 1

    tries = max_tries if max_tries is not None else 20 * n + 100
    for i in range(tries):
        if len(pool) >= n:
            break
        parent = codes[i % len(codes)]
        offer(space.mutate(space.mutate(parent, rng), rng))

    while len(pool) < n and next_one < len(one_step):  # unused single-step neighbours
        offer(one_step[next_one])
        next_one += 1

    if len(pool) < n:
        checks = 0
        for middle in one_step:
            for code in space.neighbours(middle):
                checks += 1
                offer(code)
                if len(pool) >= n or checks >= max_checks:
                    break
            if len(pool) >= n or checks >= max_checks:
                break

    rng.shuffle(pool)
    return pool[:n]


# ============================================================ proposed codes
def proposal_pool(
    codes: Iterable[Any], is_allowed: AllowFn, exclude: Iterable[str] = (), n: int | None = None
) -> list[str]:
    """The proposals that are strings, allowed, unseen and new, in their order (at most ``n``)."""
    if n is not None:
        _check_n(n)
    allow = _allow_fn(is_allowed)
    taken = set(exclude)
    pool: list[str] = []
    for item in codes:
        if n is not None and len(pool) >= n:
            break
        if not isinstance(item, str):
            continue
        code = item.strip()
        if not code or code in taken:
            continue
        taken.add(code)
        if allow(code):
            pool.append(code)
    return pool
