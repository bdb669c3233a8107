"""Search strategies and the Coordinator, driven round by round through the engine (no LangGraph).

``run_search`` runs :class:`collm_nas.engine.SearchLoop` on a real store and evaluator and logs every
round through its ``on_step`` hook: navigator.navigate -> generator.generate -> Coordinator.screen ->
evaluate -> TrialStore.add_trial -> record, until the Coordinator says stop.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from collm_nas.agents import (
    STRATEGIES,
    Coordinator,
    RoundContext,
    StopRule,
    Strategy,
    Trial,
    llm_free_names,
    sample_new,
)
from collm_nas.agents.baselines import EvolutionNavigator
from collm_nas.core import Objective, RunConfig, UserError
from collm_nas.engine import SearchLoop
from collm_nas.graphs.drive import run_graph
from collm_nas.spaces import NB201Space, SearchSpace, space_from_dict
from collm_nas.storage import SQLiteTrialStore
from collm_nas.tools import ValidityChecker

LLM_FREE_STRATEGIES = tuple(llm_free_names())
NB201 = NB201Space()


def hamming(a: str, b: str) -> int:
    assert len(a) == len(b)
    return sum(x != y for x, y in zip(a, b))


# ==================================================================== helpers
class FakeHistory:
    """An in-memory History (the protocol in agents/roles.py)."""

    def __init__(self, trials: Sequence[tuple[str, float | None]] = (), mode: str = "max", round_no: int = 1):
        self._trials = [
            Trial(seq=i + 1, ncode=c, arch=c, round=round_no, status="ok" if v is not None else "failed", value=v)
            for i, (c, v) in enumerate(trials)
        ]
        self.mode = mode

    def trials(self):
        return self._trials

    def __contains__(self, ncode):
        return any(t.ncode == ncode for t in self._trials)

    def __len__(self):
        return len(self._trials)

    def get(self, ncode):
        return next((t for t in self._trials if t.ncode == ncode), None)

    def best(self):
        ok = [t for t in self._trials if t.ok]
        if not ok:
            return None
        return (max if self.mode == "max" else min)(ok, key=lambda t: t.value)

    def in_round(self, round_no):
        return [t for t in self._trials if t.round == round_no]


def make_ctx(space, history, *, quota=4, seed=0, round_no=1, mode="max", checker=None, memory=None) -> RoundContext:
    checker = checker or ValidityChecker(space)
    return RoundContext(
        space=space,
        history=history,
        round=round_no,
        seed=seed,
        quota=quota,
        is_legal=checker.is_valid,
        objective=Objective("value", mode),
        memory=memory if memory is not None else {},
    )


@dataclass
class RoundLog:
    round: int
    quota: int
    before: list[Trial]  # the history as the navigator saw it
    strategy: Strategy
    proposals: list[str]
    accepted: list[str]
    topped_up: list[str]
    duplicates: list[str]
    illegal: dict[str, list[str]]
    memory: dict = field(default_factory=dict)  # after the navigator ran

    @property
    def batch(self) -> list[str]:
        return self.accepted + self.topped_up


@dataclass
class SearchRun:
    trials: list[Trial]
    rounds: list[RoundLog]
    stop_reason: str
    added: list[bool]
    memory: dict

    @property
    def codes(self) -> list[str]:
        return [t.ncode for t in self.trials]


def run_search(
    strategy_name: str,
    space: SearchSpace,
    evaluator: str,
    db_path,
    *,
    budget: int,
    batch_size: int,
    seed: int = 0,
    target: float | None = None,
    table_path: str | None = None,
) -> SearchRun:
    """A whole search through the engine; ``evaluator`` is 'table' or a module:function."""
    store = SQLiteTrialStore(db_path)
    run_id = f"{strategy_name}-{seed}-{batch_size}"
    config = RunConfig(space=space.name, space_definition=None if isinstance(space, NB201Space) else space.to_dict(),
                       evaluator=evaluator, dataset="cifar10" if evaluator == "table" else None,
                       strategy=strategy_name, budget=budget, seed=seed, batch_size=batch_size, target=target,
                       llm="none")
    store.create_run(run_id, config.model_dump(mode="json"))
    loop = SearchLoop(run_id, config, store, table_path=table_path)
    rounds: list[RoundLog] = []
    current: dict = {}

    def watch(step: str, before: dict, update: dict) -> None:
        if step == "plan":
            current.clear()
            current.update(round=update["round"], before=list(loop.history.trials()),
                           strategy=Strategy.model_validate(update["strategy"]), memory=dict(update["memory"]),
                           quota=loop.coordinator.quota(len(loop.history)))
        elif step == "propose":
            current["proposals"] = list(update["proposals"])
        elif step == "screen":
            sc = loop.last_screening
            rounds.append(RoundLog(current["round"], current["quota"], current["before"], current["strategy"],
                                   current["proposals"], list(sc.accepted), list(sc.topped_up), list(sc.duplicates),
                                   dict(sc.illegal), current["memory"]))

    end = run_graph(loop, on_step=watch)
    trials = list(store.trials(run_id))
    store.close()
    added = [True] * len(trials) if len({t.ncode for t in trials}) == len(trials) else [False]
    return SearchRun(trials, rounds, end["stop_reason"], added, end["memory"])


_RUNS: dict = {}


@pytest.fixture(scope="module")
def searched(tmp_path_factory, table_path):
    """Cached NB201 searches keyed by (strategy, batch size, seed, budget)."""

    def get(name: str, batch_size: int, seed: int = 0, budget: int = 300) -> SearchRun:
        key = (name, batch_size, seed, budget)
        if key not in _RUNS:
            db = tmp_path_factory.mktemp("runs") / "trials.sqlite"
            _RUNS[key] = run_search(name, NB201, "table", db, budget=budget, batch_size=batch_size, seed=seed,
                                    table_path=table_path)
        return _RUNS[key]

    return get


# ========================================================= every strategy
def test_registry():
    assert set(LLM_FREE_STRATEGIES) == {"random", "rea", "local"} and "collm" in STRATEGIES
    for name in LLM_FREE_STRATEGIES:
        s = STRATEGIES.resolve(name)
        assert s.name == name and s.default_batch_size == 1 and s.description
    with pytest.raises(UserError, match="unknown strategy 'nope'"):
        STRATEGIES.resolve("nope")


@pytest.mark.parametrize("batch_size", [1, 4])
@pytest.mark.parametrize("name", sorted(LLM_FREE_STRATEGIES))
def test_search_loop_invariants(searched, name, batch_size):
    run = searched(name, batch_size)
    checker = ValidityChecker(NB201)
    # Exactly the budget, each architecture once, each legal, each recorded once.
    assert run.stop_reason == "budget"
    assert len(run.trials) == 300
    assert len(set(run.codes)) == 300
    assert all(run.added)
    assert all(checker.is_valid(c) for c in run.codes)
    assert all(t.ok for t in run.trials)
    accepted = [c for r in run.rounds for c in r.batch]
    assert accepted == run.codes  # nothing accepted twice, nothing dropped
    evaluated = 0
    for r in run.rounds:
        assert r.quota == min(batch_size, 300 - evaluated)
        assert 1 <= len(r.batch) <= r.quota
        assert len(r.batch) == r.quota  # NB201 is far from exhausted: batches are topped up
        assert not set(r.batch) & {t.ncode for t in r.before}
        assert [t.round for t in run.trials[evaluated: evaluated + len(r.batch)]] == [r.round] * len(r.batch)
        evaluated += len(r.batch)
    # The recorded value is the searched metric.
    assert all(t.value == t.metrics["cifar10_valid"] for t in run.trials)


@pytest.mark.parametrize("name", sorted(LLM_FREE_STRATEGIES))
def test_determinism(tmp_path, table_path, name):
    a = run_search(name, NB201, "table", tmp_path / "a.sqlite", budget=60, batch_size=4, seed=3, table_path=table_path)
    b = run_search(name, NB201, "table", tmp_path / "b.sqlite", budget=60, batch_size=4, seed=3, table_path=table_path)
    c = run_search(name, NB201, "table", tmp_path / "c.sqlite", budget=60, batch_size=4, seed=4, table_path=table_path)
    assert a.codes == b.codes
    assert [t.round for t in a.trials] == [t.round for t in b.trials]
    assert a.codes != c.codes


# ====================================================================== random
@pytest.mark.parametrize("batch_size", [1, 4])
def test_random_proposals_are_new_and_legal(searched, batch_size):
    run = searched("random", batch_size)
    checker = ValidityChecker(NB201)
    for r in run.rounds:
        assert r.strategy.plan == {}
        assert len(r.proposals) == r.quota == len(set(r.proposals))
        assert all(checker.is_valid(c) for c in r.proposals)
        assert r.accepted == r.proposals and r.topped_up == [] and r.duplicates == [] and r.illegal == {}


# ================================================================= evolution
def test_rea_parameters():
    s = STRATEGIES.resolve("rea")
    assert isinstance(s.navigator, EvolutionNavigator)
    assert (s.navigator.population, s.navigator.tournament) == (10, 5)
    assert "population 10, tournament 5" in s.description
    with pytest.raises(ValueError):
        EvolutionNavigator(population=3, tournament=5)
    with pytest.raises(ValueError):
        EvolutionNavigator(population=10, tournament=0)


@pytest.mark.parametrize("batch_size", [1, 4])
def test_rea_tournaments_and_children(searched, batch_size):
    run = searched("rea", batch_size)
    evolve_rounds = 0
    for r in run.rounds:
        ok = [t for t in r.before if t.ok]
        if len(ok) < 10:
            assert r.strategy.plan == {"phase": "init"}
            continue
        evolve_rounds += 1
        assert r.strategy.plan["phase"] == "evolve"
        parents = r.strategy.plan["parents"]
        assert len(parents) == r.quota
        population = ok[-10:]  # the 10 most recent successful trials (aging)
        values = {t.ncode: t.value for t in population}
        sixth_best = sorted(values.values(), reverse=True)[5]
        for p in parents:
            assert p in values
            # The best of 5 distinct members of 10 ranks at worst 6th.
            assert values[p] >= sixth_best
        # Each child differs from its parent in exactly one decision.
        assert len(r.proposals) == len(parents)
        for parent, child in zip(parents, r.proposals):
            assert hamming(parent, child) == 1
        assert r.accepted == r.proposals
    assert evolve_rounds == len(run.rounds) - (-(-10 // batch_size))


def test_rea_parents_include_a_non_best_member(searched):
    """Tournaments of 5 (not of the whole population): parents are not always the population's best."""
    run = searched("rea", 1)
    not_best = 0
    for r in run.rounds:
        ok = [t for t in r.before if t.ok]
        if len(ok) >= 10:
            best = max(t.value for t in ok[-10:])
            not_best += {t.ncode: t.value for t in ok[-10:]}[r.strategy.plan["parents"][0]] < best
    assert not_best > 0


# ============================================================== local search
@pytest.mark.parametrize("batch_size", [1, 4])
def test_local_search_proposes_neighbours_of_the_incumbent(searched, batch_size):
    run = searched("local", batch_size)
    assert run.rounds[0].strategy.plan == {"phase": "restart"}
    restarts = climbs = 0
    previous_center = None
    for r in run.rounds:
        phase = r.strategy.plan["phase"]
        if phase == "restart":
            restarts += 1
            assert len(r.proposals) == 1  # one random starting point; the Coordinator tops up the rest
            previous_center = None
            continue
        climbs += 1
        center = r.strategy.plan["center"]
        seen = {t.ncode: t for t in r.before}
        assert center in seen  # the incumbent was evaluated
        neighbours = set(NB201.neighbours(center))
        assert r.proposals and len(r.proposals) <= r.quota
        assert all(c in neighbours and hamming(c, center) == 1 for c in r.proposals)
        assert not set(r.proposals) & set(seen)
        if previous_center is not None and center != previous_center:
            # The incumbent only moves to a better neighbour.
            assert hamming(center, previous_center) == 1
            assert seen[center].value > seen[previous_center].value
        previous_center = center
    assert restarts >= 2 and climbs > restarts
    assert run.memory.get("restarts", 0) == restarts - 1
    assert run.memory.get("moves", 0) >= 1


# =============================================================== Coordinator
@pytest.fixture()
def coordinator():
    return Coordinator(ValidityChecker(NB201), StopRule(budget=10), batch_size=4)


def test_coordinator_requires_a_positive_batch():
    with pytest.raises(ValueError):
        Coordinator(ValidityChecker(NB201), StopRule(10), batch_size=0)


@pytest.mark.parametrize("evaluated,quota", [(0, 4), (5, 4), (6, 4), (7, 3), (9, 1), (10, 0), (12, 0)])
def test_coordinator_quota(coordinator, evaluated, quota):
    assert coordinator.quota(evaluated) == quota == min(4, max(0, 10 - evaluated))


def test_coordinator_drops_duplicates(coordinator):
    history = FakeHistory([("333132", 91.6), ("000300", 50.0)])
    ctx = make_ctx(NB201, history, quota=3)
    s = coordinator.screen(["333132", "333133", "333133", " 333134 ", "000300"], ctx, 3)
    assert s.proposed == 5
    assert s.duplicates == ["333132", "333133", "000300"]
    assert s.accepted == ["333133", "333134"]
    assert s.illegal == {}
    assert len(s.topped_up) == 1
    assert s.batch == s.accepted + s.topped_up
    assert s.figures()["duplicates"] == 3


def test_coordinator_drops_illegal_codes_with_reasons(coordinator):
    history = FakeHistory([("333132", 91.6)])
    ctx = make_ctx(NB201, history, quota=4)
    s = coordinator.screen(["000000", "33x333", "3333333", "333333"], ctx, 4)
    assert s.accepted == ["333333"]
    assert set(s.illegal) == {"000000", "33x333", "3333333"}
    assert "degenerate" in s.illegal["000000"][0]
    assert "position 3" in s.illegal["33x333"][0]
    assert "7 characters" in s.illegal["3333333"][0]
    # Topped up to the quota with new, legal, distinct codes.
    assert len(s.topped_up) == 3
    assert len(set(s.batch)) == 4
    assert all(ValidityChecker(NB201).is_valid(c) and c not in history for c in s.topped_up)
    figures = s.figures()
    assert (figures["proposed"], figures["accepted"], figures["illegal"], figures["topped_up"]) == (4, 1, 3, 3)
    assert set(figures["illegal_examples"]) == set(s.illegal)


def test_screening_keeps_what_became_of_each_proposal(coordinator):
    history = FakeHistory([("333132", 91.6)])
    ctx = make_ctx(NB201, history, quota=2)
    first = coordinator.screen(["333132", "000000", "333133", "333133", "333134", "333130"], ctx, 2, top_up=False)
    assert [(v["ncode"], v["verdict"]) for v in first.verdicts()] == [
        ("333132", "duplicate"), ("000000", "illegal"), ("333133", "accepted"), ("333133", "duplicate"),
        ("333134", "accepted"), ("333130", "ranked out")]
    assert "degenerate" in first.verdicts()[1]["why"]
    # a corrective second pass and a top-up: both passes' proposals, then the fallback's codes
    ctx = make_ctx(NB201, history, quota=3)
    one = coordinator.screen(["000000"], ctx, 3, top_up=False)
    merged = one.merge(coordinator.screen(["333133"], ctx, 3, accepted=one.accepted))
    verdicts = merged.verdicts()
    assert [v["verdict"] for v in verdicts] == ["illegal", "accepted", "topped up", "topped up"]
    assert [v["ncode"] for v in verdicts[2:]] == merged.topped_up
    assert merged.figures()["verdicts"] == verdicts
    assert type(merged).from_dict(merged.to_dict()).verdicts() == verdicts  # survives the graph state


def test_coordinator_respects_the_quota(coordinator):
    ctx = make_ctx(NB201, FakeHistory(), quota=2)
    proposals = ["333132", "333133", "333134", "333131", "333130"]
    s = coordinator.screen(proposals, ctx, 2)
    assert s.accepted == ["333132", "333133"] and s.topped_up == []
    s = coordinator.screen(proposals, ctx, 0)
    assert s.batch == []


def test_coordinator_top_up_from_nothing_is_seeded(coordinator):
    ctx = make_ctx(NB201, FakeHistory(), quota=4, seed=1, round_no=2)
    a = coordinator.screen([], ctx, 4)
    b = coordinator.screen([], ctx, 4)
    assert a.proposed == 0 and a.accepted == []
    assert len(a.topped_up) == 4 and a.topped_up == b.topped_up
    other = coordinator.screen([], make_ctx(NB201, FakeHistory(), quota=4, seed=1, round_no=3), 4)
    assert other.topped_up != a.topped_up


def test_stop_rule():
    rule = StopRule(budget=10)
    assert rule.reason(9, 100.0) is None
    assert rule.reason(10, None) == "budget"
    assert rule.reason(11, None) == "budget"
    high = StopRule(budget=10, target=90.0, objective=Objective("v", "max"))
    assert high.reason(3, 89.9) is None
    assert high.reason(3, 90.0) == "target"
    assert high.reason(3, None) is None
    assert high.reason(10, 95.0) == "budget"  # the budget is checked first
    low = StopRule(budget=10, target=0.5, objective=Objective("v", "min"))
    assert low.reason(3, 0.6) is None
    assert low.reason(3, 0.5) == "target"
    assert low.reason(3, 0.1) == "target"


def test_coordinator_stop_reason():
    c = Coordinator(ValidityChecker(NB201), StopRule(budget=5, target=1.0), batch_size=1)
    assert c.stop_reason(2, 0.5) is None
    assert c.stop_reason(2, 0.5, batch_was_empty=True) == "exhausted"
    assert c.stop_reason(5, 0.5, batch_was_empty=True) == "budget"
    assert c.stop_reason(2, 1.0, batch_was_empty=True) == "target"


def test_search_stops_at_target(tmp_path, table_path):
    run = run_search("random", NB201, "table", tmp_path / "t.sqlite", budget=300, batch_size=2, target=85.0,
                     table_path=table_path)
    assert run.stop_reason == "target"
    assert max(t.value for t in run.trials) >= 85.0
    last = run.rounds[-1].round
    assert all(t.value < 85.0 for t in run.trials if t.round < last)  # it stopped at the first hit
    assert len(run.trials) < 300


# ================================================================ exhaustion
@pytest.fixture()
def tiny():
    return space_from_dict(
        {"name": "tiny", "decisions": [{"name": "a", "options": ["x", "y"]}, {"name": "b", "options": ["p", "q"]}]}
    )


def test_sample_new_runs_out(tiny):
    rng = random.Random(0)
    ctx = make_ctx(tiny, FakeHistory([("00", 1.0), ("01", 2.0), ("10", None)]))
    assert sample_new(ctx, 5, rng) == ["11"]
    assert sample_new(ctx, 5, rng, exclude={"11"}) == []
    ctx = make_ctx(tiny, FakeHistory())
    assert sorted(sample_new(ctx, 10, rng)) == ["00", "01", "10", "11"]
    assert sample_new(ctx, 0, rng) == []
    full = make_ctx(tiny, FakeHistory([(c, 1.0) for c in ["00", "01", "10", "11"]]))
    assert sample_new(full, 3, rng) == []


def test_sample_new_respects_legality(tiny):
    checker = ValidityChecker(tiny)
    ctx = RoundContext(tiny, FakeHistory(), 1, 0, 4, lambda c: checker.is_valid(c) and c[0] == "1")
    assert sorted(sample_new(ctx, 4, random.Random(0))) == ["10", "11"]


def test_coordinator_reports_exhaustion(tiny):
    coord = Coordinator(ValidityChecker(tiny), StopRule(budget=10), batch_size=4)
    full = FakeHistory([(c, 1.0) for c in ["00", "01", "10", "11"]])
    ctx = make_ctx(tiny, full, quota=coord.quota(len(full)))
    s = coord.screen(["00", "11"], ctx, ctx.quota)
    assert s.duplicates == ["00", "11"] and s.batch == []
    assert coord.stop_reason(len(full), 1.0, batch_was_empty=not s.batch) == "exhausted"


@pytest.mark.parametrize("batch_size", [1, 3])
@pytest.mark.parametrize("name", sorted(LLM_FREE_STRATEGIES))
def test_search_on_a_tiny_space_evaluates_all_of_it(tmp_path, tiny, name, batch_size):
    """The whole space as the budget: every architecture once, the last batch cut to what is left."""
    run = run_search(name, tiny, "helpers_eval:tiny_score", tmp_path / "tiny.sqlite", budget=4, batch_size=batch_size)
    assert run.stop_reason == "budget"
    assert sorted(run.codes) == ["00", "01", "10", "11"]
    assert all(run.added)


# ============================================================== RoundContext
def test_round_context_rng_and_better():
    ctx = make_ctx(NB201, FakeHistory(), seed=5, round_no=2)
    assert ctx.rng("generator").random() == ctx.rng("generator").random()
    assert ctx.rng("generator").random() != ctx.rng("navigator").random()
    assert ctx.rng("generator").random() != make_ctx(NB201, FakeHistory(), seed=5, round_no=3).rng("generator").random()
    assert ctx.better(2, 1) and not ctx.better(1, 2) and ctx.better(0, None)
    low = make_ctx(NB201, FakeHistory(), mode="min")
    assert low.better(1, 2) and not low.better(2, 1)
    seen = make_ctx(NB201, FakeHistory([("333132", 1.0)]))
    assert not seen.is_new_and_legal("333132")
    assert not seen.is_new_and_legal("000000")
    assert seen.is_new_and_legal("333133")
