"""The zero-cost proxy prior (``--prior proxy:NAME``): the space's networks scored once each by the real
proxies, the cache that an interrupted computation goes on from, and a real search warm-started by it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from collm_nas import Workspace
from collm_nas.core.errors import UserError
from collm_nas.evaluators import proxies
from collm_nas.evaluators.datasets import load_dataset
from collm_nas.evaluators.proxy_prior import PRIOR_RECIPE, cache_file, proxy_prior, space_proxy_scores
from collm_nas.spaces import SPACES

# Two codes of one network (NB201: isomorphic cells, dead edges), and a few networks of their own.
SAME_NETWORK = ("310001", "310100")
OTHERS = ("223133", "333132", "111111", "121212")


@pytest.fixture
def nb201():
    return SPACES.resolve("nb201")


@pytest.fixture
def cache(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv("COLLM_NAS_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_each_network_is_scored_once_by_the_real_proxies_and_read_back_from_the_cache(nb201, cache,
                                                                                       monkeypatch) -> None:
    assert nb201.network_key(SAME_NETWORK[0]) == nb201.network_key(SAME_NETWORK[1])
    codes = [*SAME_NETWORK, *OTHERS]
    path = cache_file(cache, "nb201")
    scores = space_proxy_scores(nb201, codes, path)
    rows = _lines(path)
    assert len(rows) == 5 and len({r["key"] for r in rows}) == 5  # one line per network
    assert scores[SAME_NETWORK[0]] == scores[SAME_NETWORK[1]]
    data = load_dataset("digits")
    for code in OTHERS:  # what the proxies give that network directly, with the prior's recipe
        assert scores[code] == proxies.proxy_scores(code, data, PRIOR_RECIPE)
    assert len({scores[c]["naswot"] for c in OTHERS}) == len(OTHERS)

    def no_compute(*_a, **_k):
        raise AssertionError("a cached network was scored again")

    monkeypatch.setattr(proxies, "proxy_scores", no_compute)
    assert space_proxy_scores(nb201, codes, path) == scores


def test_an_interrupted_computation_goes_on_where_it_stopped(nb201, cache, monkeypatch) -> None:
    path = cache_file(cache, "nb201")
    full = space_proxy_scores(nb201, OTHERS, path)
    # As a process killed while writing leaves it: two whole lines, then half of the third.
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:2]) + lines[2][: len(lines[2]) // 2])
    done = {r["key"] for r in _lines_tolerant(path)}
    computed: list[str] = []
    real = proxies.proxy_scores

    def counted(code, *a, **k):
        computed.append(code)
        return real(code, *a, **k)

    monkeypatch.setattr(proxies, "proxy_scores", counted)
    said: list[str] = []
    again = space_proxy_scores(nb201, OTHERS, path, say=said.append)
    assert again == full
    assert sorted(computed) == sorted(c for c in OTHERS if nb201.network_key(c) not in done) and len(computed) == 2
    assert "scoring 2 networks" in said[0] and "2 already in" in said[0]


def _lines_tolerant(path: Path) -> list[dict]:
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out


def test_a_proxy_that_is_not_one_or_a_space_it_cannot_build_is_one_line(nb201, cache) -> None:
    with pytest.raises(UserError, match="unknown proxy 'zen'.*proxy:naswot"):
        proxy_prior(nb201, ["223133"], "zen", cache)

    class Other:
        name = "resnet"

    with pytest.raises(UserError, match="space nb201.*not 'resnet'"):
        proxy_prior(Other(), ["0"], "naswot", cache)


def test_a_search_warm_started_by_the_proxy_prior_ranks_from_its_first_round(tmp_path: Path, table_path: str,
                                                                             cache, monkeypatch, nb201) -> None:
    """Through the engine and real LangGraph, with a stand-in for the proxy (scoring the whole space for real
    takes minutes; the marked test below does): the cache is filled once, per network; the run has no random
    initial trials; a resumed or later run computes nothing; a bad reference is one line."""
    from collm_nas.evaluators.nb201_table import load_table

    table = load_table(table_path)
    scored: list[str] = []

    def stand_in(code, data, config, **_):  # another dataset's accuracy: a prior that ranks well
        scored.append(code)
        value = table.value(code, "cifar100_test")
        return {"synflow": value, "naswot": value, "grad_norm": -value}

    monkeypatch.setattr(proxies, "proxy_scores", stand_in)
    ws = Workspace(tmp_path / "runs", table_path=table_path)
    result = ws.search(dataset="imagenet16", strategy="lmsearcher", llm="none", budget=12, batch_size=4, seed=0,
                       prior=["proxy:naswot"], run_id="warm")
    assert result.evaluations == 12
    networks = {nb201.network_key(c) for c in nb201.enumerate()}
    assert len(scored) == len(set(scored)) == len(_lines(cache_file(cache, "nb201")))
    assert len(scored) <= len(networks)  # one code per network, never two of one network
    rounds = ws.run("warm").rounds()
    assert rounds and all("learned ranker" in r["strategy"] for r in rounds)  # no random start
    trials = ws.run("warm").trials()
    # The prior's best networks come first: the first round's picks beat a random draw by far.
    ranks = sorted(table.value(c, "cifar100_test") for c in nb201.enumerate())
    first = [t for t in trials if t.round == 1]
    assert all(table.value(t.ncode, "cifar100_test") >= ranks[int(0.9 * len(ranks))] for t in first)

    monkeypatch.setattr(proxies, "proxy_scores", lambda *a, **k: pytest.fail("cached scores computed again"))
    ws.search(dataset="cifar10", strategy="lmsearcher", llm="none", budget=4, batch_size=4, seed=1,
              prior=["proxy:naswot"], run_id="again")
    # Several objectives: the prior informs the accuracy's model, but the front and its focus need trials first.
    ws.search(dataset="imagenet16", strategy="lmsearcher", llm="none", budget=16, batch_size=4, seed=2,
              objectives=["imagenet16_test:max", "lat_ms_eyeriss:min"], prior=["proxy:naswot"], run_id="front")
    strategies = [r["strategy"] for r in ws.run("front").rounds()]
    assert "random initial trials" in strategies[0] and "learned ranker" in strategies[-1]
    with pytest.raises(UserError, match="unknown proxy 'zen'"):
        ws.search(dataset="cifar10", strategy="lmsearcher", llm="none", budget=4, prior=["proxy:zen"],
                  run_id="bad")
    with pytest.raises(UserError, match="never come from the target"):  # a proxy search warm-started by itself
        ws.search(evaluator="proxy", strategy="lmsearcher", llm="none", budget=4, prior=["proxy:naswot"],
                  run_id="self")


@pytest.mark.slow
def test_the_real_naswot_prior_of_the_whole_space_finds_the_imagenet16_best(tmp_path: Path, table_path: str,
                                                                            cache, nb201) -> None:
    """The real thing, end to end: every network of NB201 scored by NASWOT (minutes on one core), then a cold
    ImageNet16-120 search warm-started by it alone (no table value of any dataset) finds the best network."""
    from collm_nas.evaluators.nb201_table import DATASETS, load_table

    ws = Workspace(tmp_path / "runs", table_path=table_path)
    result = ws.search(dataset="imagenet16", strategy="lmsearcher", llm="none", budget=100, seed=0,
                       prior=["proxy:naswot"], run_id="naswot")
    lines = _lines(cache_file(cache, "nb201"))
    networks = {nb201.network_key(c) for c in nb201.enumerate()}
    assert len(lines) == len({r["key"] for r in lines}) and len(lines) >= 0.75 * len(networks)
    best, _ = load_table(table_path).best(DATASETS["imagenet16"].searched)
    assert result.found_at is not None and result.found_at <= 100, result.found_at
    assert any(nb201.network_key(t.ncode) == nb201.network_key(best) for t in ws.run("naswot").trials())
