"""Candidate pools: pruned-subspace samples, mutations and screened proposals."""

from __future__ import annotations

import random

import pytest

from collm_nas.spaces import SPACES, space_from_dict
from collm_nas.tools.pools import (
    mutation_pool,
    proposal_pool,
    prune_subspace,
    sample_from_subspace,
    sample_pool,
)
from collm_nas.tools.validity import ValidityChecker

# A conditional user space: 'depth' and 'kernel' only matter for some blocks,
# 'expand' only for the 'mbconv' block with a deep stack.
COND = {
    "name": "cond",
    "decisions": [
        {"name": "block", "options": ["plain", "conv", "mbconv"]},
        {"name": "kernel", "options": [3, 5, 7], "active_if": {"block": ["conv", "mbconv"]}},
        {"name": "depth", "options": [1, 2, 3, 4], "active_if": {"block": ["mbconv"]}},
        {"name": "expand", "options": [2, 4, 6], "active_if": {"depth": [3, 4]}},
        {"name": "act", "options": ["relu", "gelu"]},
    ],
}


@pytest.fixture(scope="module")
def nb201():
    return SPACES.resolve("nb201")


@pytest.fixture(scope="module")
def checker(nb201):
    return ValidityChecker(nb201)


@pytest.fixture(scope="module")
def legal(nb201, checker):
    return [c for c in nb201.enumerate() if checker.is_valid(c)]


@pytest.fixture(scope="module")
def cond():
    return space_from_dict(COND)


def assert_pool(pool, checker, exclude=()):
    assert len(pool) == len(set(pool)), "codes repeat"
    assert all(checker.is_valid(c) for c in pool), "illegal code"
    assert not set(pool) & set(exclude), "a seen code came back"


# --------------------------------------------------------------------------- subspaces
def test_prune_subspace_keeps_at_least_keep_min(nb201, cond):
    rng = random.Random(3)
    for _ in range(200):
        sub = prune_subspace(nb201, rng, prune_prob=0.9, keep_min=2)
        assert set(sub) == set(range(nb201.length))
        for pos, kept in sub.items():
            assert len(kept) >= 2 and len(set(kept)) == len(kept)
            assert all(0 <= i < len(nb201.decisions[pos].options) for i in kept)
    # Everything pruned away still leaves one option; nothing pruned keeps all.
    assert all(len(k) == 1 for k in prune_subspace(cond, rng, prune_prob=1.0).values())
    full = prune_subspace(cond, rng, prune_prob=0.0)
    assert full == {p: tuple(range(len(d.options))) for p, d in enumerate(cond.decisions)}
    # keep_min is capped at the option count.
    assert prune_subspace(cond, rng, prune_prob=1.0, keep_min=10)[4] == (0, 1)
    with pytest.raises(ValueError):
        prune_subspace(cond, rng, prune_prob=1.5)


def test_codes_from_a_pruned_subspace_use_only_kept_options(nb201):
    rng = random.Random(11)
    sub = prune_subspace(nb201, rng, prune_prob=0.5)
    assert any(len(k) < 5 for k in sub.values())  # this seed prunes something
    for _ in range(500):
        indices = nb201.indices(sample_from_subspace(nb201, sub, rng))
        assert all(indices[pos] in sub[pos] for pos in range(nb201.length))


def test_pruned_subspace_in_a_conditional_space_gives_canonical_codes(cond):
    rng = random.Random(5)
    for _ in range(50):
        sub = prune_subspace(cond, rng)
        for _ in range(20):
            code = sample_from_subspace(cond, sub, rng)
            assert cond.format_problems(code) == []
            idx = cond.indices(code)
            for pos in range(cond.length):
                if cond.is_active(pos, idx):
                    assert idx[pos] in sub[pos]
                else:
                    assert idx[pos] == 0


# --------------------------------------------------------------------------- sample_pool
def test_sample_pool_legal_unseen_distinct_and_full(nb201, checker, legal):
    rng = random.Random(0)
    exclude = random.Random(1).sample(legal, 3000)
    for n in (1, 10, 64):
        pool = sample_pool(nb201, checker.is_valid, n, rng, exclude=exclude)
        assert len(pool) == n
        assert_pool(pool, checker, exclude)


def test_sample_pool_respects_a_custom_predicate(nb201, checker):
    # Only codes whose first edge is option 3: the predicate is all that decides.
    pool = sample_pool(nb201, lambda c: checker.is_valid(c) and c[0] == "3", 40, random.Random(2))
    assert len(pool) == 40 and all(c[0] == "3" for c in pool)


def test_sample_pool_is_deterministic_per_seed(nb201, checker):
    a = sample_pool(nb201, checker.is_valid, 30, random.Random(42), exclude=["333333"])
    b = sample_pool(nb201, checker.is_valid, 30, random.Random(42), exclude=["333333"])
    c = sample_pool(nb201, checker.is_valid, 30, random.Random(43), exclude=["333333"])
    assert a == b and a != c


def test_sample_pool_returns_fewer_when_the_space_runs_out(nb201, checker, legal):
    left = legal[-25:]
    exclude = legal[:-25]
    pool = sample_pool(nb201, checker.is_valid, 100, random.Random(0), exclude=exclude)
    assert sorted(pool) == sorted(left)
    assert sample_pool(nb201, checker.is_valid, 5, random.Random(0), exclude=legal) == []
    assert sample_pool(nb201, checker.is_valid, 0, random.Random(0)) == []


def test_sample_pool_in_a_conditional_space(cond):
    check = ValidityChecker(cond)
    everything = list(cond.enumerate())
    assert len(everything) == 1 * 2 + 3 * 2 + 3 * (2 * 1 + 2 * 3) * 2  # plain, conv, mbconv
    rng = random.Random(9)
    pool = sample_pool(cond, check, 20, rng, exclude=everything[:5])
    assert len(pool) == 20
    assert_pool(pool, check, everything[:5])
    assert set(pool) <= set(everything)  # canonical: inactive decisions are '0'
    # Asking for more than there is gives all that is left, each once.
    rest = sample_pool(cond, check, 1000, rng, exclude=pool)
    assert sorted(rest) == sorted(set(everything) - set(pool))


# --------------------------------------------------------------------------- mutation_pool
def differing(space, a, b):
    return sum(x != y for x, y in zip(space.indices(a), space.indices(b)))


def test_mutation_pool_stays_near_the_parents(nb201, checker, legal):
    parents = ["333333", "123412"]
    exclude = ["333334", "333330"]
    rng = random.Random(4)
    pool = mutation_pool(nb201, checker.is_valid, parents, 40, rng, exclude=exclude)
    assert len(pool) == 40
    assert_pool(pool, checker, exclude + parents)
    assert all(min(differing(nb201, c, p) for p in parents) in (1, 2) for c in pool)
    assert any(min(differing(nb201, c, p) for p in parents) == 1 for c in pool)
    assert any(min(differing(nb201, c, p) for p in parents) == 2 for c in pool)
    again = mutation_pool(nb201, checker.is_valid, parents, 40, random.Random(4), exclude=exclude)
    assert again == pool


def test_mutation_pool_takes_trials_and_runs_out(nb201, checker):
    class T:
        def __init__(self, ncode):
            self.ncode = ncode

    # A one-decision space: every other code is one step away, so the pool holds them all.
    tiny = space_from_dict({"name": "tiny", "decisions": [{"name": "x", "options": list("abcd")}]})
    pool = mutation_pool(tiny, lambda c: True, [T("1")], 10, random.Random(0), exclude=["2"])
    assert sorted(pool) == ["0", "3"]
    assert mutation_pool(nb201, checker, [], 5, random.Random(0)) == []


def test_mutation_pool_in_a_conditional_space_is_canonical(cond):
    check = ValidityChecker(cond)
    everything = set(cond.enumerate())
    parent = "22320"  # mbconv, kernel 7, depth 4, expand 6, relu
    assert check.is_valid(parent)
    pool = mutation_pool(cond, check, [parent], 15, random.Random(1))
    assert len(pool) == 15 and set(pool) <= everything and parent not in pool
    # Changing 'block' switches decisions off: those children carry '0' there.
    assert any(c[0] != "2" for c in pool)


# --------------------------------------------------------------------------- proposal_pool
def test_proposal_pool_screens_in_order(checker):
    proposals = ["123412", " 333333 ", "000000", "333333", "1234", 42, "222222", "444444", "111111"]
    pool = proposal_pool(proposals, checker.is_valid, exclude=["222222"])
    # "000000" is all 'none' (no path to the output) in NB201: illegal.
    assert not checker.is_valid("000000")
    assert pool == ["123412", "333333", "444444", "111111"]
    assert proposal_pool(proposals, checker, exclude=["222222"], n=2) == ["123412", "333333"]
    assert proposal_pool([], checker) == []
