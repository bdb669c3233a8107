"""The learned ranker (agents/surrogate.py): features, fit quality, acquisition, prior, speed."""

from __future__ import annotations

import math
import random

import pytest
import torch

from collm_nas.agents.surrogate import LearnedRanker, featurize
from collm_nas.evaluators.nb201_table import load_table
from collm_nas.spaces import SPACES, space_from_dict
from collm_nas.tools.validity import ValidityChecker


@pytest.fixture(scope="module")
def nb201_space():
    return SPACES.resolve("nb201")


@pytest.fixture(scope="module")
def legal(nb201_space):
    checker = ValidityChecker(nb201_space)
    return [c for c in nb201_space.enumerate() if checker.is_valid(c)]


@pytest.fixture(scope="module")
def table(table_path):
    return load_table(table_path)


def _split(legal, n_train, n_test=2000, seed=0):
    sample = random.Random(seed).sample(legal, n_train + n_test)
    return sample[:n_train], sample[n_train:]


def _ranks(values):
    order = sorted(range(len(values)), key=lambda i: values[i])
    r = [0.0] * len(values)
    for pos, i in enumerate(order):
        r[i] = float(pos)
    return r


def spearman(a, b) -> float:
    ra, rb = _ranks(a), _ranks(b)
    return float(torch.corrcoef(torch.tensor([ra, rb], dtype=torch.float64))[0, 1])


def _toy_space():
    return space_from_dict(
        {
            "name": "toy",
            "decisions": [
                {"name": "block", "options": ["conv", "attn", "mlp"]},
                {"name": "heads", "options": [2, 4, 8], "active_if": {"block": ["attn"]}},
                {"name": "width", "options": [64, 128, 256, 512]},
                {"name": "act", "options": ["relu", "gelu"]},
            ],
        }
    )


# ------------------------------------------------------------------ features
def test_featurize_nb201_shapes(nb201_space):
    x = featurize(nb201_space, ["333132", "000000"], hook=False)
    assert x.shape == (2, 30)
    assert x.sum(1).tolist() == [6.0, 6.0]
    xp = featurize(nb201_space, ["333132"], pairwise=True, hook=False)
    assert xp.shape == (1, 30 + 15 * 25)
    assert xp.sum().item() == 6 + 15
    # with the space's own features: the live-edge shares of skip, 1x1, 3x3 and pool
    assert featurize(nb201_space, ["333132"])[0, 30:].tolist() == pytest.approx([1 / 6, 1 / 6, 4 / 6, 0.0])


def test_featurize_conditional_space_zeroes_inactive_decisions():
    space = _toy_space()
    codes = list(space.enumerate())
    x = featurize(space, codes, pairwise=True)
    assert x.shape[0] == len(codes) == 8 + 8 + 3 * 8  # conv, mlp: 4*2 each; attn: 3*4*2
    heads = x[:, 3:6]
    for code, row in zip(codes, heads):
        assert row.sum().item() == (1.0 if code[0] == "1" else 0.0)


def test_featurize_uses_space_hook_when_present():
    space = _toy_space()
    space.features = lambda codes: [[float(len(c))] for c in codes]
    space.provides_features = True
    assert featurize(space, ["0000"]).shape[1] == featurize(space, ["0000"], hook=False).shape[1] + 1


# --------------------------------------------------------------- fit quality
def test_ranker_beats_random_on_nb201(nb201_space, legal, table):
    train, test = _split(legal, 100)
    ranker = LearnedRanker(nb201_space, acquisition="mean", seed=0)
    ranker.fit(train, [table.value(c, "cifar10_valid") for c in train])
    truth = [table.value(c, "cifar10_valid") for c in test]
    scores = ranker.score(test)
    rho = spearman(scores, truth)
    assert rho > 0.6, rho  # measured ~0.79 over seeds
    top10 = ranker.rank(test)[:10]
    random10 = random.Random(1).sample(test, 10)
    top_mean = sum(table.value(c, "cifar10_valid") for c in top10) / 10
    random_mean = sum(table.value(c, "cifar10_valid") for c in random10) / 10
    assert top_mean > random_mean + 2.0, (top_mean, random_mean)  # measured 90.3 vs 86.8
    assert top_mean > 89.0


def test_min_mode_flips_the_order(nb201_space, legal, table):
    train, test = _split(legal, 60, 500, seed=3)
    values = [table.value(c, "cifar10_valid") for c in train]
    up = LearnedRanker(nb201_space, mode="max", acquisition="mean").fit(train, values)
    down = LearnedRanker(nb201_space, mode="min", acquisition="mean").fit(train, [-v for v in values])
    assert up.rank(test)[:20] == down.rank(test)[:20]


@pytest.mark.parametrize("acq", ["ei", "ucb", "mean"])
def test_acquisitions_are_finite(nb201_space, legal, table, acq):
    train, test = _split(legal, 40, 500, seed=2)
    ranker = LearnedRanker(nb201_space, acquisition=acq).fit(train, [table.value(c, "cifar100_test") for c in train])
    scores = ranker.score(test + train[:5])
    assert len(scores) == 505 and all(math.isfinite(s) for s in scores)
    assert len(set(scores)) > 100


def test_rank_is_deterministic_given_seed(nb201_space, legal, table):
    train, test = _split(legal, 30, 300, seed=4)
    values = [table.value(c, "imagenet16_test") for c in train]
    first = LearnedRanker(nb201_space, seed=7).fit(train, values).rank(test)
    second = LearnedRanker(nb201_space, seed=7).fit(train, values).rank(test)
    assert first == second
    assert sorted(first) == sorted(set(test))


@pytest.mark.parametrize("n", [0, 1, 2])
def test_few_trials_are_handled(nb201_space, legal, n):
    codes = legal[:n]
    ranker = LearnedRanker(nb201_space, seed=0).fit(codes, [50.0 + i for i in range(n)])
    scores = ranker.score(legal[100:150])
    assert len(scores) == 50 and all(math.isfinite(s) for s in scores)
    assert len(ranker.rank(legal[100:150])) == 50


def test_failed_trials_are_skipped(nb201_space, legal):
    ranker = LearnedRanker(nb201_space).fit(legal[:5], [1.0, None, float("nan"), 2.0, 3.0])
    assert ranker.trials == 3


# ---------------------------------------------------------------- user space
def test_user_space_with_conditional_decision():
    space = _toy_space()
    codes = list(space.enumerate())

    def truth(code):  # attn with 8 heads and a wide layer is best
        c = space.decode(code)
        return (2.0 if c["block"] == "attn" else 0.0) + (1.0 if c.get("heads") == "8" else 0.0) \
            + int(c["width"]) / 256 + (0.3 if c["act"] == "gelu" else 0.0)

    rng = random.Random(0)
    train = rng.sample(codes, 15)
    rest = [c for c in codes if c not in train]
    for acq in ("ei", "ucb", "mean"):
        ranker = LearnedRanker(space, acquisition=acq, seed=0).fit(train, [truth(c) for c in train])
        assert all(math.isfinite(s) for s in ranker.score(rest))
    ranker = LearnedRanker(space, acquisition="mean", seed=0).fit(train, [truth(c) for c in train])
    assert spearman(ranker.score(rest), [truth(c) for c in rest]) > 0.6
    assert "4 decisions" in ranker.describe()


# --------------------------------------------------------------------- prior
def _rank_correlations(legal, table, n_train, make_base, make_other) -> list[tuple[float, float]]:
    """Over three seeded splits: Spearman's rho of two rankers' posterior means on held-out NAS-Bench-201
    codes (``cifar10_valid``), each fitted on the same ``n_train`` codes; ``(base, other)`` per split."""
    out = []
    for seed in range(3):
        train, test = _split(legal, n_train, seed=seed)
        values = [table.value(c, "cifar10_valid") for c in train]
        truth = [table.value(c, "cifar10_valid") for c in test]
        base, other = make_base().fit(train, values), make_other().fit(train, values)
        out.append((spearman(base.score(test), truth), spearman(other.score(test), truth)))
    return out


def test_prior_helps_with_tiny_data(nb201_space, legal, table):
    prior = [("cifar100_test", legal, [table.value(c, "cifar100_test") for c in legal])]
    pairs = _rank_correlations(
        legal, table, 10,
        lambda: LearnedRanker(nb201_space, acquisition="mean", use_hook=False),
        lambda: LearnedRanker(nb201_space, acquisition="mean", prior=prior, use_hook=False))
    assert all(warm > 0.85 for _, warm in pairs), pairs  # measured ~0.97
    assert min(warm - cold for cold, warm in pairs) > 0.2, pairs
    warm = LearnedRanker(nb201_space, acquisition="mean", prior=prior, use_hook=False)
    assert "cifar100_test" in warm.describe()


def test_space_features_help_with_little_data(nb201_space, legal, table):
    """NAS-Bench-201's live-edge operation shares (kernel and linear mean) against the codes alone, 20 trials."""
    pairs = _rank_correlations(
        legal, table, 20,
        lambda: LearnedRanker(nb201_space, acquisition="mean", use_hook=False),
        lambda: LearnedRanker(nb201_space, acquisition="mean"))
    assert all(shaped > 0.7 for _, shaped in pairs), pairs  # measured 0.78-0.84
    assert min(shaped - plain for plain, shaped in pairs) > 0.2, pairs  # measured 0.34-0.45
    plain, shaped = LearnedRanker(nb201_space, use_hook=False), LearnedRanker(nb201_space)
    assert "space features" in shaped.describe() and "space features" not in plain.describe()


def test_prior_covers_unseen_codes_and_works_without_trials(nb201_space, legal, table):
    half = legal[::2]
    prior = [("c100 half", half, [table.value(c, "cifar100_test") for c in half])]
    ranker = LearnedRanker(nb201_space, acquisition="mean", prior=prior).fit([], [])
    others = legal[1::2][:2000]
    rho = spearman(ranker.score(others), [table.value(c, "cifar10_valid") for c in others])
    assert rho > 0.6, rho


def test_prior_replaying_the_target_is_refused(nb201_space, legal, table):
    values = [table.value(c, "cifar10_valid") for c in legal]
    ranker = LearnedRanker(nb201_space, prior=[(legal, values)])
    with pytest.raises(ValueError, match="own results"):
        ranker.fit(legal[:20], values[:20])


# --------------------------------------------------------------------- speed
def test_fits_a_thousand_trials_and_scores_the_whole_space(nb201_space, legal, table):
    # Timing lives in benchmarks/surrogate_offline.py (about 1 s here); this checks the large case works.
    train = random.Random(5).sample(legal, 1000)
    values = [table.value(c, "cifar10_valid") for c in train]
    ranker = LearnedRanker(nb201_space, seed=0).fit(train, values)
    scores = ranker.score(legal)
    assert len(scores) == len(legal) and all(math.isfinite(s) for s in scores)
    top = ranker.rank([c for c in legal if c not in set(train)])[:10]
    assert sum(table.value(c, "cifar10_valid") for c in top) / 10 > 89.0


def test_malformed_codes_are_refused(nb201_space):
    with pytest.raises(ValueError, match="not an NCode"):
        featurize(nb201_space, ["333139"])
    with pytest.raises(ValueError, match="length"):
        LearnedRanker(nb201_space).fit(["3331"], [1.0])


def test_fit_trials_uses_ok_trials_only(nb201_space, legal):
    from collm_nas.core import Trial

    trials = [Trial(seq=i, ncode=c, arch="", round=0, status="ok", value=float(i)) for i, c in enumerate(legal[:6])]
    trials.append(Trial(seq=9, ncode=legal[9], arch="", round=0, status="failed", value=None))
    ranker = LearnedRanker(nb201_space).fit_trials(trials)
    assert ranker.trials == 6


def test_closed_form_gradient_matches_autograd(nb201_space, legal, table):
    """The fit's hand-written gradient of the marginal likelihood equals autograd's, with and without features."""
    train = random.Random(1).sample(legal, 40)
    values = [table.value(c, "cifar100_test") for c in train]
    for hook in (True, False):
        ranker = LearnedRanker(nb201_space, use_hook=hook, seed=0).fit(train, values)
        parts = ranker._gram_parts(ranker._H, ranker._F)
        gen = torch.Generator().manual_seed(0)
        params = {k: (v + 0.2 * torch.randn(v.shape, generator=gen, dtype=v.dtype)).requires_grad_(True)
                  for k, v in ranker._params.items()}
        loss = ranker._nll(params, parts, ranker._y)
        loss.backward()
        value, grads = ranker._nll_and_grad({k: v.detach() for k, v in params.items()}, parts, ranker._y)
        assert value == pytest.approx(loss.item(), rel=1e-10)
        for name, p in params.items():
            if p.numel():
                assert torch.allclose(p.grad, grads[name], atol=1e-10), name
