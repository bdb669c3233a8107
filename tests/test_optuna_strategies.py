"""Optuna's samplers as strategies (collm_nas.agents.optuna_samplers): the conformance suite, the study rebuilt
from the run's trials (values, failures, remembered illegal proposals, constraints, NSGA-II generations), what
is told for an illegal or repeated proposal, several objectives, approval, the one-line error without Optuna,
and a run killed with SIGKILL and resumed (end to end)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from collm_nas import Workspace
from collm_nas.agents import STRATEGIES, multi_objective_names, peer_names
from collm_nas.agents.optuna_samplers import (MEMORY_KEY, REMEMBERED_PRUNED, ask, constraint_values, generations,
                                              make_sampler, quiet_optuna, rebuild, remember, require_optuna, suggest)
from collm_nas.core import Decision, Objective, Objectives, RoundContext, SearchSpace, SearchStrategy, Trial, UserError
from collm_nas.spaces import NB201Space, parse_constraints
from collm_nas.testing import StrategyContract
from collm_nas.tools import ValidityChecker

PAIR = ["cifar10_valid:max", "lat_ms_pixel3:min"]
TrialState = optuna.trial.TrialState


class ListHistory:
    """The History protocol over a list of trials."""

    def __init__(self, trials: list[Trial]) -> None:
        self._trials = trials

    def trials(self) -> list[Trial]:
        return self._trials

    def __contains__(self, ncode: object) -> bool:
        return any(t.ncode == ncode for t in self._trials)

    def __len__(self) -> int:
        return len(self._trials)

    def get(self, ncode: str) -> Trial | None:
        return next((t for t in self._trials if t.ncode == ncode), None)

    def best(self) -> Trial | None:
        return max((t for t in self._trials if t.ok), key=lambda t: t.value, default=None)

    def in_round(self, round_no: int) -> list[Trial]:
        return [t for t in self._trials if t.round == round_no]


def ok(code: str, value: float, round_no: int = 1, **metrics: float) -> Trial:
    return Trial(code, metrics={"acc": value, **metrics}).recorded(round=round_no, value=value)


def context(space: SearchSpace, trials: list[Trial], checker: ValidityChecker | None = None, quota: int = 1,
            memory: dict | None = None, objectives: Objectives | None = None, round_no: int = 2) -> RoundContext:
    checker = checker or ValidityChecker(space)
    return RoundContext(space=space, history=ListHistory(trials), round=round_no, seed=0, quota=quota,
                        is_legal=checker.is_valid, objective=Objective("acc"), memory=memory or {},
                        checker=checker, objectives=objectives)


# ====================================================================== the conformance suite
class TestOptunaTPE(StrategyContract):
    budget = 20

    def make_strategy(self) -> SearchStrategy:
        return STRATEGIES.resolve("optuna-tpe")


class TestOptunaTPEInBatches(StrategyContract):
    budget = 20
    batch_size = 4

    def make_strategy(self) -> SearchStrategy:
        return STRATEGIES.resolve("optuna-tpe")


class TestOptunaGP(StrategyContract):
    budget = 13  # 10 random startup trials, then the GP fits: each ask refits it (a fraction of a second)

    def make_strategy(self) -> SearchStrategy:
        return STRATEGIES.resolve("optuna-gp")


class TestOptunaTPEOnAConditionalSpace(StrategyContract):
    """The MobileNetV3-like space: decisions active only under earlier ones (Optuna's dynamic search space)."""

    space = "mbv3"
    evaluator = "e2e_evaluator:score"
    metric = "score"
    budget = 16

    def make_strategy(self) -> SearchStrategy:
        return STRATEGIES.resolve("optuna-tpe")


class TestOptunaGPOnAConditionalSpace(TestOptunaTPEOnAConditionalSpace):
    budget = 12

    def make_strategy(self) -> SearchStrategy:
        return STRATEGIES.resolve("optuna-gp")


class TestOptunaNSGA2(StrategyContract):
    batch_size = 3

    def make_strategy(self) -> SearchStrategy:
        return STRATEGIES.resolve("optuna-nsga2")


class TestOptunaRandom(StrategyContract):
    def make_strategy(self) -> SearchStrategy:
        return STRATEGIES.resolve("optuna-random")


def test_the_peers_are_registered_by_name() -> None:
    assert peer_names() == ["optuna-tpe", "optuna-gp", "optuna-nsga2", "optuna-random"]
    for name in peer_names():
        strategy = STRATEGIES.resolve(name)
        assert strategy.name == name and strategy.multi_objective and not strategy.uses_llm
        assert name in multi_objective_names()


# ====================================================================== the study, rebuilt
def test_the_study_holds_the_runs_trials_failures_and_remembered_illegal_codes() -> None:
    space = NB201Space()
    trials = [ok("333132", 91.6), Trial.failed("123123").recorded(round=1, value=None), ok("000300", 10.0, 2)]
    ctx = context(space, trials, memory={MEMORY_KEY: ["000000"]}, round_no=3)
    study = rebuild(optuna, ctx, make_sampler(optuna, "tpe", 0))
    got = study.trials
    assert [t.state for t in got] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE, TrialState.PRUNED]
    assert got[0].values == [91.6] and got[2].values == [10.0] and study.direction.name == "MAXIMIZE"
    assert got[0].params == space.decode("333132") and got[3].params == space.decode("000000")
    assert all(t.constraints == {} for t in got)  # the run has no constraints


def test_asked_codes_are_the_sampled_decisions_and_skip_inactive_ones() -> None:
    space = SearchSpace("cond", [Decision("blocks", ("1", "2")),
                                 Decision("kernel2", ("3", "5", "7"), active_if={"blocks": ("2",)})])
    ctx = context(space, [])
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(40):
        trial = study.ask()
        code = suggest(trial, ctx)
        seen.add(code)
        assert space.decode(code) == trial.params  # one parameter per active decision, nothing else
    assert seen == {"00", "10", "11", "12"}  # the inactive kernel is written 0


def test_an_illegal_proposal_is_told_pruned_with_its_constraints_and_a_repeat_stays_running(
        table_path: str, nb201_evaluator) -> None:
    space = NB201Space()
    checker = ValidityChecker(space, parse_constraints(["params_mb<=0.5"]), nb201_evaluator.resources)
    assert constraint_values(context(space, [], checker), "333132") == pytest.approx({"params_mb<=0.5": 1.0734 - 0.5},
                                                                                     abs=1e-3)
    assert constraint_values(context(space, [], checker), "000300")["params_mb<=0.5"] <= 0
    ctx = context(space, [], checker, quota=5)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    got = ask(optuna, study, ctx, 5)
    assert len(got["proposals"]) == 5 and got["pruned"] and got["asks"] == 5 + len(got["pruned"]) + got["repeats"]
    for t in study.trials:
        code = space.from_indices([space.decision(d.name).options.index(t.params[d.name]) for d in space.decisions])
        if code in got["pruned"]:
            assert t.state == TrialState.PRUNED
            if not space.structural_problems(code):  # over the constraint: a positive value, learnt by TPE
                assert t.constraints["params_mb<=0.5"] > 0
        else:
            assert t.state == TrialState.RUNNING  # a proposal (or a repeat): in flight until the round ends
    # Everything evaluated but one code: the asks that repeat evaluated codes stay pending, the new one comes.
    tiny = SearchSpace("tiny", [Decision("a", ("x", "y")), Decision("b", ("x", "y"))])
    ctx = context(tiny, [ok("00", 1.0), ok("01", 2.0), ok("10", 3.0)], quota=1)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    got = ask(optuna, study, ctx, 1)
    assert got["proposals"] == ["11"] and got["repeats"] == got["asks"] - 1
    assert all(t.state == TrialState.RUNNING for t in study.trials)


def test_gp_moves_on_from_an_ask_left_pending_and_repeats_one_told_failed(nb201_evaluator) -> None:
    """Why a repeat stays RUNNING: GP reads no failed trials (it would propose the same code again), and takes a
    running one as a pending point that its q-batch EI looks away from."""
    import random

    space = NB201Space()
    rng = random.Random(0)
    codes = list(dict.fromkeys(c for c in (space.sample(rng) for _ in range(40)) if space.structural_problems(c) == []))
    history = [ok(t.ncode, t.metrics["cifar10_valid"]) for t in nb201_evaluator.evaluate(codes[:15])]
    ctx = context(space, history)
    with quiet_optuna(optuna):
        study = rebuild(optuna, ctx, make_sampler(optuna, "gp", 0))
        first = study.ask()
        code = suggest(first, ctx)
        study.tell(first, state=TrialState.FAIL)
        again = suggest(study.ask(), ctx)  # left RUNNING
        other = suggest(study.ask(), ctx)
    assert again == code and other != code


def test_illegal_proposals_are_remembered_once_each_newest_kept() -> None:
    memory: dict = {}
    remember(memory, ["a", "b", "a"])
    remember(memory, ["c", "a"])
    assert memory[MEMORY_KEY] == ["b", "c", "a"]
    remember(memory, [f"x{i}" for i in range(REMEMBERED_PRUNED)])
    assert len(memory[MEMORY_KEY]) == REMEMBERED_PRUNED and memory[MEMORY_KEY][-1] == f"x{REMEMBERED_PRUNED - 1}"


def test_nsga2_generations_are_replayed_as_optuna_gave_them() -> None:
    """A live NSGA-II study, asked round by round in batches (some trials failing), against the replay."""
    sampler = optuna.samplers.NSGAIISampler(population_size=4, seed=0)
    study = optuna.create_study(sampler=sampler)
    space = {"x": optuna.distributions.CategoricalDistribution(tuple(str(i) for i in range(30)))}
    ours = []
    for round_no, batch in enumerate([3, 3, 1, 2, 4, 5, 3, 4, 1, 6], start=1):
        asked = [study.ask(space) for _ in range(batch)]
        for i, trial in enumerate(asked):
            code = trial.params["x"]
            if (round_no + i) % 4 == 0:
                study.tell(trial, state=TrialState.FAIL)
                ours.append(Trial.failed(code).recorded(round=round_no, value=None))
            else:
                study.tell(trial, float(code))
                ours.append(ok(code, float(code), round_no))
    key = sampler._get_generation_key()
    live = [t.system_attrs[key] for t in study.trials]
    assert generations(ours, 4) == live and max(live) >= 3


def test_several_objectives_are_the_studys_directions_and_values(nb201_evaluator) -> None:
    objectives = Objectives.parse(PAIR)
    trials = [Trial("333132", metrics={"cifar10_valid": 91.6, "lat_ms_pixel3": 9.0}).recorded(round=1, value=91.6),
              Trial("000300", metrics={"cifar10_valid": 80.0}).recorded(round=1, value=80.0)]  # lacks an objective
    ctx = context(NB201Space(), trials, objectives=objectives)
    study = rebuild(optuna, ctx, make_sampler(optuna, "nsga2", 0))
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert study.trials[0].values == [91.6, 9.0] and study.trials[1].state == TrialState.FAIL


# ====================================================================== through the engine
@pytest.mark.parametrize("strategy,budget", [("optuna-tpe", 20), ("optuna-nsga2", 20), ("optuna-gp", 12)])
def test_each_sampler_searches_a_front(tmp_path: Path, table_path: str, strategy: str, budget: int) -> None:
    ws = Workspace(tmp_path / "runs", table_path=table_path)
    result = ws.search(strategy=strategy, budget=budget, seed=3, objectives=PAIR, run_id="mo")
    trials = ws.run("mo").trials()
    assert result.evaluations == budget == len({t.ncode for t in trials})
    front = Objectives.parse(PAIR).front(trials)
    assert [t.ncode for t in result.pareto.front] == [t.ncode for t in front] and front


def test_constraints_reach_the_sampler_and_only_feasible_codes_are_evaluated(tmp_path: Path, table_path: str) -> None:
    from collm_nas.core import RunConfig
    from collm_nas.engine import SearchLoop
    from collm_nas.graphs.drive import run_graph
    from collm_nas.storage import SQLiteTrialStore

    config = RunConfig(strategy="optuna-tpe", budget=24, seed=1, constraints=["params_mb<=0.4"], batch_size=2)
    store = SQLiteTrialStore(tmp_path / "c.db")
    store.create_run("c", config.model_dump(mode="json"))
    loop = SearchLoop("c", config, store, table_path=table_path)
    seen: list[dict] = []
    end = run_graph(loop, on_step=lambda step, before, update: seen.append(update) if step == "plan" else None)
    trials = store.trials("c")
    assert end["stop_reason"] == "budget" and len(trials) == 24
    assert all(t.metrics.get("params_mb", t.cost.get("params_mb", 0)) <= 0.4 for t in trials)
    pruned = end["memory"][MEMORY_KEY]
    assert pruned and all(loop.checker.problems(code) for code in pruned)
    # The next round's study: every evaluated trial feasible, the remembered illegal codes pruned and, when over
    # the constraint, infeasible (TPE ranks them below every complete trial).
    ctx = loop.context(end, end["round"] + 1)
    study = rebuild(optuna, ctx, make_sampler(optuna, "tpe", 0))
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    infeasible = [t for t in study.trials if t.state == TrialState.PRUNED and t.constraints["params_mb<=0.4"] > 0]
    assert len(complete) == 24 and all(t.constraints["params_mb<=0.4"] <= 0 for t in complete)
    assert infeasible
    assert sum(u["strategy"]["plan"]["pruned"] for u in seen) >= len(pruned)


def test_approval_every_round_evaluates_what_the_sampler_proposed(tmp_path: Path, table_path: str) -> None:
    ws = Workspace(tmp_path / "runs", table_path=table_path)
    plain = ws.search(strategy="optuna-tpe", budget=6, batch_size=3, seed=2, run_id="plain")
    result = ws.search(strategy="optuna-tpe", budget=6, batch_size=3, seed=2, run_id="gated", approval="every_round")
    for _ in range(2):
        assert result.status == "awaiting approval"
        assert "Optuna TPESampler" in ws.pending_approval("gated")["strategy"]["summary"]
        result = ws.approve("gated", "approve")
    assert result.status == "finished" == plain.status
    assert [t.ncode for t in ws.run("gated").trials()] == [t.ncode for t in ws.run("plain").trials()]


# ====================================================================== without Optuna
def test_without_optuna_the_strategy_is_one_line_naming_the_install(tmp_path: Path, table_path: str,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from cli_runner import run_cli

    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna now fails, as where it is not installed
    with pytest.raises(UserError, match=r"need Optuna, which is not installed; install it with "
                                        r"pip install 'collm-nas\[optuna\]'"):
        require_optuna()
    with pytest.raises(UserError, match="not installed"):
        STRATEGIES.resolve("optuna-gp")
    assert not set(peer_names()) & set(multi_objective_names())
    out = run_cli(["search", "--strategy", "optuna-tpe", "--budget", "5", "--seed", "0"],
                  env={"COLLM_NAS_RUNS_DIR": str(tmp_path / "runs"), "COLLM_NAS_NB201_TABLE": table_path,
                       "PATH": "/usr/bin:/bin"})
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "collm-nas[optuna]" in out.stderr
    assert "Traceback" not in out.stderr


# ====================================================================== SIGKILL and resume, end to end
@pytest.mark.e2e
@pytest.mark.parametrize("strategy,batch", [("optuna-tpe", "1"), ("optuna-nsga2", "4")])
def test_sigkill_then_resume_proposes_what_an_uninterrupted_run_does(tmp_path: Path, table_path: str,
                                                                     strategy: str, batch: str) -> None:
    from test_resume import _codes_in_order, _env, _start, _trials, _wait_for_trials

    budget = 90
    env = _env(tmp_path, table_path, E2E_EVAL_SLEEP="0.01")
    db = tmp_path / "runs" / "collm-nas.db"
    args = ["search", "--evaluator", "e2e_evaluator:score", "--strategy", strategy, "--budget", str(budget),
            "--batch-size", batch, "--seed", "5", "--run-id", "victim", "--json"]
    proc = _start(args, env)
    _wait_for_trials(db, "victim", 30, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    before = _trials(db, "victim")
    assert 30 <= len(before) < budget
    resumed = subprocess.run([sys.executable, "-m", "collm_nas.cli", "resume", "victim", "--json"], env=env,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["evaluations"] == budget == len(_trials(db, "victim"))
    assert all(_trials(db, "victim")[code] == row for code, row in before.items())
    whole = subprocess.run([sys.executable, "-m", "collm_nas.cli", *args[:-3], "--run-id", "whole", "--json"],
                           env=env, capture_output=True, text=True, timeout=300)
    assert whole.returncode == 0, whole.stderr
    assert _codes_in_order(db, "whole") == _codes_in_order(db, "victim")
