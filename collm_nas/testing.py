"""Conformance suites, in the manner of ``optuna.testing``: inherit one to test a new implementation.

* :class:`StoreContract`: a :class:`~collm_nas.core.TrialStore` (runs, idempotent
  trials, rounds, claims, checkpoint pruning). SQLite and PostgreSQL pass it.
* :class:`StrategyContract`: a :class:`~collm_nas.core.SearchStrategy`, run for
  real through the search graph production runs (LangGraph over the engine's
  :class:`~collm_nas.engine.SearchLoop`): legal
  proposals or proposals the Coordinator can report, the budget kept, nothing
  evaluated twice, the same trials under the same seed, and a run rebuilt from
  its store half-way (a resume) that ends exactly like an uninterrupted one.
* :class:`EvaluatorContract`: a :class:`~collm_nas.core.Evaluator` (one trial per
  code in order, a bad code fails its trial instead of raising, the searched
  metric in every successful trial, declared capabilities that answer).

Each suite is a plain pytest class; a subclass provides the object under test::

    from collm_nas.testing import StrategyContract

    class TestMyStrategy(StrategyContract):
        def make_strategy(self):
            return my_strategy()

pytest (a test dependency, not a runtime one) is imported only here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from collm_nas.core import (ACTIVE, FINISHED, INTERRUPTED, Decision, Evaluator, RunConfig, SearchSpace,
                            SearchStrategy, Trial, TrialStore, UserError)

__all__ = ["EvaluatorContract", "StoreContract", "StrategyContract", "contract_space", "contract_score"]


def _trial(code: str, value: float | None, round_no: int = 1) -> Trial:
    if value is None:
        return Trial(code, f"arch-{code}", cost={"s": 0.1}, status="failed", error="boom").recorded(
            round=round_no, value=None)
    return Trial(code, f"arch-{code}", metrics={"acc": value}, cost={"s": 0.1}).recorded(round=round_no, value=value)


# ====================================================================== store
class StoreContract:
    """What every trial store must do. Subclasses implement :meth:`make_store` (a fresh, empty store)."""

    def make_store(self, tmp_path: Path) -> TrialStore:
        raise NotImplementedError

    @pytest.fixture
    def store(self, tmp_path: Path) -> Any:
        s = self.make_store(tmp_path)
        yield s
        s.close()

    def test_runs_are_created_listed_and_held_by_their_creator(self, store: TrialStore) -> None:
        assert store.get_run("r1") is None and store.list_runs() == []
        store.create_run("r1", {"strategy": "rea", "budget": 10})
        store.create_run("r2", {})
        with pytest.raises(Exception):
            store.create_run("r1", {})
        run = store.get_run("r1")
        assert (run.status, run.config, run.n_trials) == (ACTIVE, {"strategy": "rea", "budget": 10}, 0)
        assert run.best_ncode is None and run.best_value is None and run.stop_reason is None
        assert run.pid == os.getpid() and run.created_at <= run.updated_at
        assert run.process_alive and run.display_status == "running"  # the creator is the run's writer
        assert [r.run_id for r in store.list_runs()] == ["r1", "r2"]

    def test_a_trial_is_recorded_once_per_run_and_code(self, store: TrialStore) -> None:
        store.create_run("r1", {})
        store.create_run("r2", {})
        assert store.add_trial("r1", _trial("333132", 91.6)) is True
        before = store.trials("r1")
        assert store.add_trial("r1", _trial("333132", 10.0, round_no=7)) is False  # other content: ignored
        assert store.trials("r1") == before
        [t] = before
        assert (t.ncode, t.arch, t.round, t.status, t.value, t.error) == ("333132", "arch-333132", 1, "ok", 91.6, None)
        assert t.metrics == {"acc": 91.6} and t.cost == {"s": 0.1}
        assert store.add_trial("r2", _trial("333132", 5.0)) is True  # another run: another trial
        assert store.count_trials("r1") == 1 and store.count_trials("r2") == 1 and store.count_trials("no") == 0

    def test_trials_come_back_in_order_and_incrementally(self, store: TrialStore) -> None:
        store.create_run("r1", {})
        codes = ["333132", "000300", "111111", "222222", "010003"]
        for i, code in enumerate(codes):
            store.add_trial("r1", _trial(code, float(i) if i != 2 else None, round_no=1 + i // 2))
        trials = store.trials("r1")
        assert [t.ncode for t in trials] == codes and [t.round for t in trials] == [1, 1, 2, 2, 3]
        assert [t.seq for t in trials] == sorted(t.seq for t in trials)
        assert trials[2].status == "failed" and trials[2].error == "boom" and trials[2].value is None
        assert not trials[2].ok and trials[0].ok
        assert [t.ncode for t in store.trials("r1", after_seq=trials[2].seq)] == codes[3:]
        assert store.trials("r1", after_seq=trials[-1].seq) == [] and store.trials("nobody") == []
        assert store.recorded("r1", ["333132", "444444", "222222"]) == {"333132", "222222"}
        assert store.recorded("r1", []) == set()

    def test_round_figures_are_replaced_by_a_rerun_round(self, store: TrialStore) -> None:
        store.create_run("r1", {})
        store.add_round("r1", 2, {"evaluated": 4, "best_value": 90.0})
        store.add_round("r1", 1, {"evaluated": 2})
        store.add_round("r1", 2, {"evaluated": 5})
        assert store.rounds("r1") == [{"round": 1, "evaluated": 2}, {"round": 2, "evaluated": 5}]
        assert store.rounds("other") == []
        assert store.rounds("r1", after_round=1) == [{"round": 2, "evaluated": 5}]
        assert store.rounds("r1", after_round=2) == []

    def test_status_and_summary(self, store: TrialStore) -> None:
        store.create_run("r1", {})
        store.add_trial("r1", _trial("333132", 91.6))
        store.add_trial("r1", _trial("000300", None))
        store.update_summary("r1", "333132", 91.6)
        run = store.get_run("r1")
        assert (run.best_ncode, run.best_value, run.n_trials) == ("333132", 91.6, 2)
        store.set_status("r1", FINISHED, "budget")
        assert (store.get_run("r1").status, store.get_run("r1").stop_reason) == (FINISHED, "budget")
        store.set_status("r1", INTERRUPTED)  # no reason given: the old one stays
        assert (store.get_run("r1").status, store.get_run("r1").stop_reason) == (INTERRUPTED, "budget")
        assert store.get_run("r1").display_status == "interrupted (resumable)"

    def test_claims_refuse_unknown_changed_and_finished_runs(self, store: TrialStore) -> None:
        store.create_run("r1", {})
        with pytest.raises(UserError, match="unknown run 'zz'"):
            store.claim("zz")
        store.set_status("r1", INTERRUPTED)
        seen = store.get_run("r1").updated_at
        store.set_status("r1", INTERRUPTED)
        with pytest.raises(UserError, match="changed while this command was starting"):
            store.claim("r1", seen=seen)
        store.claim("r1", seen=store.get_run("r1").updated_at)
        assert store.get_run("r1").status == ACTIVE
        store.set_status("r1", FINISHED, "budget")
        with pytest.raises(UserError, match="already finished"):
            store.claim("r1")

    def test_notes_are_kept_replaced_and_deleted(self, store: TrialStore) -> None:
        store.create_run("r1", {})
        store.create_run("r2", {})
        assert store.notes("r1") == {}
        store.set_note("r1", "host", {"url": "http://127.0.0.1:1", "thread": "t"})
        store.set_note("r1", "pause", {"round": 2, "candidates": ["333132"]})
        store.set_note("r1", "pause", {"round": 3, "candidates": []})
        store.set_note("r2", "pause", {"round": 1})
        assert store.notes("r1") == {"host": {"url": "http://127.0.0.1:1", "thread": "t"},
                                     "pause": {"round": 3, "candidates": []}}
        store.set_note("r1", "pause", None)
        assert store.notes("r1") == {"host": {"url": "http://127.0.0.1:1", "thread": "t"}}
        assert store.notes("r2") == {"pause": {"round": 1}}

    def test_pruning_a_run_without_checkpoints_deletes_nothing(self, store: TrialStore) -> None:
        store.create_run("r1", {})
        store.add_trial("r1", _trial("333132", 1.0))
        report = store.prune_checkpoints("r1", keep_recent=5)
        assert (report.run_id, report.deleted) == ("r1", 0)
        assert [t.ncode for t in store.trials("r1")] == ["333132"]


# =================================================================== strategy
def contract_space() -> SearchSpace:
    """A small space for strategy contracts: 4 decisions, 3 x 4 x 3 x 2 = 72 architectures, one rule."""

    class ContractSpace(SearchSpace):
        def structural_problems(self, ncode: str) -> list:
            from collm_nas.core import Problem

            if ncode.startswith("0") and ncode.endswith("0"):
                return [Problem("structure", "a network of depth 1 without skip connections is not allowed")]
            return []

    return ContractSpace("contract", [
        Decision("depth", ("1", "2", "3")),
        Decision("width", ("16", "32", "64", "128")),
        Decision("act", ("relu", "gelu", "tanh")),
        Decision("skip", ("no", "yes")),
    ])


def contract_score(arch: dict[str, str]) -> dict[str, float]:
    """A deterministic, smooth score over :func:`contract_space` (best: depth 3, width 64, gelu, skip)."""
    depth, width = int(arch["depth"]), int(arch["width"])
    act = {"relu": 0.5, "gelu": 1.0, "tanh": 0.0}[arch["act"]]
    return {"score": depth * 2.0 - abs(width - 64) / 32.0 + act + (0.7 if arch["skip"] == "yes" else 0.0),
            "width": float(width)}


class StrategyContract:
    """What every strategy must do, run through the engine on a small real space.

    Subclasses implement :meth:`make_strategy`; they may set :attr:`space`
    (a registered space, a space file or ``module:attribute``),
    :attr:`evaluator` (a registered evaluator or ``module:function``),
    :attr:`metric`, :attr:`budget` and :attr:`batch_size`.
    """

    space = "collm_nas.testing:contract_space"
    evaluator = "collm_nas.testing:contract_score"
    metric = "score"
    budget = 20
    batch_size: int | None = None  # None: the strategy's own

    def make_strategy(self) -> SearchStrategy:
        raise NotImplementedError

    def _loop(self, tmp_path: Path, run_id: str, seed: int = 0) -> Any:
        from collm_nas.engine import SearchLoop
        from collm_nas.storage import SQLiteTrialStore

        strategy = self.make_strategy()
        config = RunConfig(space=self.space, evaluator=self.evaluator, strategy=f"{type(self).__module__}:contract",
                           budget=self.budget, seed=seed, batch_size=self.batch_size, llm="none",
                           metric=self.metric, fallback="random")
        store = SQLiteTrialStore(tmp_path / "contract.db")
        if store.get_run(run_id) is None:
            store.create_run(run_id, config.model_dump(mode="json"))
        from collm_nas.core import load_settings

        return SearchLoop(run_id, config, store, strategy=strategy, table_path=load_settings().table_path())

    def _run(self, tmp_path: Path, run_id: str, seed: int = 0, max_rounds: int | None = None,
             state: dict | None = None) -> tuple[Any, dict]:
        from collm_nas.graphs.drive import run_graph

        loop = self._loop(tmp_path, run_id, seed)
        try:
            end = run_graph(loop, state, max_rounds=max_rounds)  # the search graph production runs
        finally:
            loop.close()
        return loop, end

    def test_it_is_a_search_strategy(self) -> None:
        strategy = self.make_strategy()
        assert isinstance(strategy, SearchStrategy)
        assert strategy.default_batch_size >= 1 and strategy.name

    def test_a_run_spends_its_budget_and_evaluates_nothing_twice(self, tmp_path: Path) -> None:
        loop, end = self._run(tmp_path, "budget")
        codes = [t.ncode for t in loop.store.trials("budget")]
        assert len(codes) == self.budget and len(set(codes)) == len(codes)
        assert end["stop_reason"] in ("budget", "target", "no_improvement", "exhausted")
        assert all(not loop.checker.problems(c) for c in codes)  # only legal codes are ever evaluated
        rounds = loop.store.rounds("budget")
        assert rounds and all(r["accepted"] + r["topped_up"] <= loop.batch_size for r in rounds)

    def test_the_same_seed_gives_the_same_trials(self, tmp_path: Path) -> None:
        first, _ = self._run(tmp_path / "a", "same")
        second, _ = self._run(tmp_path / "b", "same")
        assert [t.ncode for t in first.store.trials("same")] == [t.ncode for t in second.store.trials("same")]

    def test_a_run_rebuilt_from_its_store_goes_on_as_if_never_stopped(self, tmp_path: Path) -> None:
        whole, _ = self._run(tmp_path / "whole", "r")
        _, half = self._run(tmp_path / "parts", "r", max_rounds=3)
        resumed, _ = self._run(tmp_path / "parts", "r", state=half)  # a new engine, as after a crash
        assert [t.ncode for t in resumed.store.trials("r")] == [t.ncode for t in whole.store.trials("r")]


# ================================================================== evaluator
class EvaluatorContract:
    """What every evaluator must do. Subclasses implement :meth:`make_evaluator` and :meth:`codes` (a few
    legal codes of its space); :attr:`bad_code` is a code of the wrong form."""

    bad_code = "not-a-code"

    def make_evaluator(self) -> Evaluator:
        raise NotImplementedError

    def codes(self) -> Sequence[str]:
        raise NotImplementedError

    @pytest.fixture
    def evaluator(self) -> Any:
        ev = self.make_evaluator()
        yield ev
        ev.close()

    def test_it_names_its_metrics_and_direction(self, evaluator: Evaluator) -> None:
        assert isinstance(evaluator, Evaluator)
        assert evaluator.searched_metric and evaluator.reported_metric
        assert evaluator.mode in ("max", "min") and evaluator.objective.metric == evaluator.searched_metric

    def test_one_trial_per_code_in_order(self, evaluator: Evaluator) -> None:
        codes = list(self.codes())
        trials = evaluator.evaluate(codes)
        assert [t.ncode for t in trials] == codes and all(isinstance(t, Trial) for t in trials)
        for t in trials:
            assert t.status in ("ok", "failed")
            if t.status == "ok":
                assert isinstance(t.metrics.get(evaluator.searched_metric), float)
            else:
                assert t.error and "\n" not in t.error

    def test_a_bad_code_fails_its_trial_and_raises_nothing(self, evaluator: Evaluator) -> None:
        codes = [self.bad_code, *list(self.codes())[:1]]
        trials = list(evaluator.iter_evaluate(codes))
        assert [t.ncode for t in trials] == codes
        assert trials[0].status == "failed" and trials[0].error

    def test_declared_capabilities_answer(self, evaluator: Evaluator) -> None:
        evaluator.prepare()
        code = list(self.codes())[0]
        resources = evaluator.resources(code)
        assert isinstance(resources, dict) and set(resources) <= set(evaluator.resource_names)
        assert isinstance(evaluator.estimate_cost(code), dict)
        for column in evaluator.reference_columns[:1]:
            assert isinstance(evaluator.reference_values(column), dict)

    def test_declared_metrics_cover_its_trials_and_can_be_asked_for(self, evaluator: Evaluator) -> None:
        names = evaluator.metric_names
        if not names:  # known only from its trials (a user's function): nothing to check here
            return
        codes = list(self.codes())[:2]
        for t in evaluator.evaluate(codes):
            if t.status == "ok":
                assert set(t.metrics) <= set(names), set(t.metrics) - set(names)
        evaluator.want_metrics(names)  # every declared metric, asked for at once
        for t in evaluator.evaluate(codes):
            if t.status == "ok":
                assert set(names) <= set(t.metrics) | set(t.cost), set(names) - set(t.metrics)
