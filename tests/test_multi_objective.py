"""Multi-objective search: every LLM-free strategy (and the learned ranker) searches a Pareto front through the
engine; results carry the front and its hypervolume; bad objectives are one line; the CLI end to end (resume
after SIGKILL keeps the front, fork keeps the objectives, a user evaluator with two metrics)."""

from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from collm_nas import Workspace
from collm_nas.core import Objectives, UserError
from collm_nas.core.pareto import dominates
from cli_runner import kill_when
from test_collm import llm_env  # noqa: F401  (the fake-server fixture)

ROOT = Path(__file__).resolve().parents[1]
PAIR = ["cifar10_valid:max", "lat_ms_pixel3:min"]


def _check_front(ws: Workspace, run_id: str, specs: list[str]) -> None:
    """The reported front is exactly the non-dominated trials, and its hypervolume is the front's."""
    run = ws.run(run_id)
    objectives = Objectives.parse(specs)
    trials = run.trials()
    summary = run.pareto()
    points = {t.ncode: objectives.point(t) for t in trials if objectives.point(t) is not None}
    front = {t.ncode for t in summary.front}
    assert front and front <= set(points)
    for code, p in points.items():
        beaten = any(dominates(q, p) for q in points.values())
        assert (code not in front) == beaten, code
    assert summary.hypervolume > 0
    assert summary.hypervolume == pytest.approx(objectives.hypervolume(trials, summary.reference))
    assert summary.objectives == specs


@pytest.mark.parametrize("strategy,budget", [("random", 30), ("rea", 40), ("local", 40), ("lmsearcher", 20)])
def test_each_strategy_searches_a_front(tmp_path: Path, table_path: str, strategy: str, budget: int) -> None:
    ws = Workspace(tmp_path / "runs", table_path=table_path)
    result = ws.search(strategy=strategy, budget=budget, seed=3, objectives=PAIR, llm="none", run_id="mo")
    trials = ws.run("mo").trials()
    assert result.evaluations == budget == len({t.ncode for t in trials})
    assert all(t.ok and "lat_ms_pixel3" in t.metrics for t in trials)  # the table returned the objective
    _check_front(ws, "mo", PAIR)
    data = result.to_dict()
    assert data["objectives"] == PAIR and len(data["pareto"]) == len(result.pareto.front)
    assert data["hv_reference"] == list(result.pareto.reference) and "worst value" in data["hv_reference_rule"]
    # The same seed finds the same front.
    again = ws.search(strategy=strategy, budget=budget, seed=3, objectives=PAIR, llm="none", run_id="mo2")
    assert [t.ncode for t in again.pareto.front] == [t.ncode for t in result.pareto.front]


def test_three_objectives_and_a_given_reference(tmp_path: Path, table_path: str) -> None:
    specs = ["cifar10_valid:max", "lat_ms_pixel3:min", "params_mb:min"]
    ws = Workspace(tmp_path / "runs", table_path=table_path)
    result = ws.search(strategy="rea", budget=30, seed=1, objectives=specs, hv_reference=[80, 20, 1.5])
    _check_front(ws, result.run_id, specs)
    assert result.pareto.reference == (80.0, 20.0, 1.5) and result.pareto.reference_rule == "given"
    assert ws.run(result.run_id).pareto([0, 100, 100]).hypervolume > result.pareto.hypervolume
    with pytest.raises(UserError, match="needs 3 values"):
        ws.run(result.run_id).pareto([1, 2])


def test_one_objective_is_the_single_objective_search(tmp_path: Path, table_path: str) -> None:
    ws = Workspace(tmp_path / "runs", table_path=table_path)
    plain = ws.search(strategy="rea", budget=25, seed=2, dataset="cifar100", run_id="plain")
    one = ws.search(strategy="rea", budget=25, seed=2, dataset="cifar100", objectives=["cifar100_test:max"],
                    run_id="one")
    assert [t.ncode for t in ws.run("one").trials()] == [t.ncode for t in ws.run("plain").trials()]
    assert one.pareto is None and plain.pareto is None and one.best.ncode == plain.best.ncode
    # A cost can be the one objective too: the table minimises it.
    cheap = ws.search(strategy="local", budget=25, seed=2, objectives=["lat_ms_pixel3:min"], run_id="cheap")
    assert cheap.best.value == min(t.metrics["lat_ms_pixel3"] for t in ws.run("cheap").trials())


@pytest.mark.parametrize("objectives,message", [
    (["cifar10_valid:max", "latency:min"], "unknown objective 'latency': the table evaluator returns cifar10_valid"),
    (["cifar10_valid:up", "params_mb:min"], "the direction must be max or min, not 'up'"),
    (["params_mb:min", "params_mb:max"], "objective params_mb is given twice"),
    ([":max", "params_mb:min"], "names no metric"),
    (["a:max", "b:max", "c:max", "d:max"], "one to three objectives"),
])
def test_bad_objectives_are_one_line_and_store_nothing(tmp_path: Path, table_path: str, objectives: list[str],
                                                       message: str) -> None:
    ws = Workspace(tmp_path / "runs", table_path=table_path)
    with pytest.raises(UserError, match=message.replace("(", r"\(")) as error:
        ws.search(strategy="rea", budget=10, objectives=objectives)
    assert "\n" not in str(error.value) and ws.runs() == []


def test_strategies_that_search_one_objective_say_so(tmp_path: Path, table_path: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT))
    ws = Workspace(tmp_path / "runs", table_path=table_path)
    # A user's strategy that does not declare multi_objective (examples/bandit_strategy.py).
    with pytest.raises(UserError, match=r"the strategy 'option-bandit' searches one objective only and this run "
                                        r"has 2; pick one that searches several \(random, rea, local, collm, "
                                        r"lmsearcher, hybrid, optuna-tpe, optuna-gp, optuna-nsga2, optuna-random\) or "
                                        r"give one --objective"):
        ws.search(strategy="examples.bandit_strategy:OptionBandit", budget=10, objectives=PAIR)
    with pytest.raises(UserError, match="--metric cifar10_test and --objective"):
        ws.search(strategy="rea", budget=10, metric="cifar10_test", objectives=PAIR)
    assert ws.runs() == []


def test_a_trial_without_an_objective_fails_and_the_search_goes_on(tmp_path: Path, table_path: str,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "tests"))
    ws = Workspace(tmp_path / "runs", table_path=table_path)
    result = ws.search(evaluator="mo_evaluator:sometimes_without_cost", strategy="random", budget=20, seed=0,
                       objectives=["score:max", "cost:min"], run_id="gaps")
    trials = ws.run("gaps").trials()
    failed = [t for t in trials if t.status == "failed"]
    assert result.evaluations == 20 and 0 < len(failed) < 20
    assert all("the evaluator returned no cost (an objective of this run; it returned score)" == t.error
               for t in failed)
    assert {t.ncode for t in result.pareto.front} <= {t.ncode for t in trials if t.ok}
    # The first (searched) objective missing fails the trial too (a function evaluator says so itself).
    first = ws.search(evaluator="mo_evaluator:sometimes_without_score", strategy="random", budget=20, seed=0,
                      objectives=["score:max", "cost:min"], run_id="first")
    failed = [t for t in ws.run("first").trials() if t.status != "ok"]
    assert first.evaluations == 20 and failed and all("'score'" in t.error and t.value is None for t in failed)


# ================================================================ the command line, end to end
def _env(tmp_path: Path, table_path: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ, COLLM_NAS_RUNS_DIR=str(tmp_path / "runs"), COLLM_NAS_NB201_TABLE=table_path,
               PYTHONPATH=str(ROOT / "tests"), **extra)
    env.pop("COLLM_NAS_STORE", None)
    return env


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "collm_nas.cli", *args], env=env, capture_output=True, text=True,
                          timeout=300)


def _count(db: Path, run_id: str) -> int:
    try:
        with sqlite3.connect(db) as conn:
            return conn.execute("SELECT COUNT(*) FROM trials WHERE run_id = ?", (run_id,)).fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


@pytest.mark.e2e
@pytest.mark.parametrize("strategy", ["random", "rea", "local", "lmsearcher"])
def test_sigkill_and_resume_keep_the_front_and_fork_keeps_the_objectives(tmp_path: Path, table_path: str,
                                                                        strategy: str) -> None:
    """A user evaluator returning two metrics (score, size), searched on both from the CLI."""
    budget = 30 if strategy == "lmsearcher" else 60
    env = _env(tmp_path, table_path, E2E_EVAL_SLEEP="0.02")
    db = tmp_path / "runs" / "collm-nas.db"
    args = ["search", "--evaluator", "e2e_evaluator:score", "--strategy", strategy, "--budget", str(budget),
            "--seed", "4", "--llm", "none", "--objective", "score:max", "--objective", "size:min", "--json"]
    proc = subprocess.Popen([sys.executable, "-m", "collm_nas.cli", *args, "--run-id", "victim"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    kill_when(proc, lambda: _count(db, "victim") >= 12)
    assert 12 <= _count(db, "victim") < budget
    resumed = _cli(["resume", "victim", "--json"], env)
    assert resumed.returncode == 0, resumed.stderr
    whole = _cli([*args, "--run-id", "whole"], env)
    assert whole.returncode == 0, whole.stderr
    got, want = json.loads(resumed.stdout), json.loads(whole.stdout)
    assert got["evaluations"] == budget and got["objectives"] == ["score:max", "size:min"]
    assert [t["ncode"] for t in got["pareto"]] == [t["ncode"] for t in want["pareto"]]
    assert got["hypervolume"] == pytest.approx(want["hypervolume"])
    shown = _cli(["show", "victim", "--format", "json"], env)
    assert json.loads(shown.stdout)["pareto"] == got["pareto"]
    text = _cli(["show", "victim", "--hv-ref", "0,1000"], env).stdout
    assert "Pareto front" in text and "reference score=0, size=1000 (given)" in text
    # A fork keeps the objectives and, with the same strategy and seed, replays its parent.
    forked = _cli(["fork", "victim", "--round", "5", "--run-id", "child", "--json"], env)
    assert forked.returncode == 0, forked.stderr
    child = json.loads(forked.stdout)
    assert child["objectives"] == ["score:max", "size:min"]
    assert [t["ncode"] for t in child["pareto"]] == [t["ncode"] for t in want["pareto"]]


@pytest.mark.e2e
@pytest.mark.parametrize("strategy", ["collm", "hybrid"])
def test_llm_strategies_resume_after_sigkill_with_the_same_front(tmp_path: Path, table_path: str,
                                                                 strategy: str) -> None:
    """The LLM strategies in multi-objective mode from the CLI, on the fake OpenAI server: killed while the
    Navigator's call of round 3 hangs, resumed, the front is the one an uninterrupted run finds; a fork keeps
    the objectives. The fake Generator's codes are a function of its prompt, so equal prompts get equal codes."""
    from fake_openai import FakeOpenAIServer, Reply
    from test_collm import SECRET, STRATEGY, last_user, role_of

    state = {"hang": True, "navigator": 0}

    def answer(request: dict) -> Reply:
        if role_of(request) == "navigator":
            state["navigator"] += 1
            reply = Reply.text(json.dumps(STRATEGY))
            if state["hang"] and state["navigator"] == 3:
                reply.delay = 120.0  # round 3's strategy never comes
            return reply
        rng = random.Random(zlib.crc32(last_user(request).encode()))
        return Reply.text("Try " + ", ".join("".join(rng.choice("01234") for _ in range(6)) for _ in range(6)))

    db = tmp_path / "runs" / "collm-nas.db"
    with FakeOpenAIServer(default=Reply.dynamic(answer)) as server:
        env = _env(tmp_path, table_path, COLLM_NAS_LLM_BASE_URL=server.base_url, COLLM_NAS_LLM_API_KEY=SECRET,
                   COLLM_NAS_LLM_MODEL="fake-model", COLLM_NAS_LLM_DECODING="text",
                   COLLM_NAS_LLM_RETRY_INITIAL_WAIT_S="0.01", COLLM_NAS_LLM_RETRY_MAX_WAIT_S="0.05",
                   COLLM_NAS_LLM_TIMEOUT_S="120")
        args = ["search", "--strategy", strategy, "--llm", "endpoint", "--budget", "20", "--batch-size", "4",
                "--seed", "2", "--objective", PAIR[0], "--objective", PAIR[1], "--json"]
        proc = subprocess.Popen([sys.executable, "-m", "collm_nas.cli", *args, "--run-id", "victim"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        kill_when(proc, lambda: state["navigator"] >= 3)
        assert _count(db, "victim") == 8  # rounds 1 and 2, four each
        state["hang"] = False
        resumed = _cli(["resume", "victim", "--json"], env)
        assert resumed.returncode == 0, resumed.stderr
        whole = _cli([*args, "--run-id", "whole"], env)
        assert whole.returncode == 0, whole.stderr
        forked = _cli(["fork", "victim", "--round", "2", "--run-id", "child", "--json"], env)
        assert forked.returncode == 0, forked.stderr
    got, want, child = (json.loads(done.stdout) for done in (resumed, whole, forked))
    assert got["evaluations"] == want["evaluations"] == 20 and got["objectives"] == want["objectives"] == PAIR
    assert [t["ncode"] for t in got["pareto"]] == [t["ncode"] for t in want["pareto"]]
    assert got["hypervolume"] == pytest.approx(want["hypervolume"]) and got["hypervolume"] > 0
    assert child["objectives"] == PAIR
    assert [t["ncode"] for t in child["pareto"]] == [t["ncode"] for t in want["pareto"]]


@pytest.mark.e2e
def test_bad_objectives_on_the_command_line_are_one_line(tmp_path: Path, table_path: str) -> None:
    env = _env(tmp_path, table_path)
    for objectives, message in (
        (["cifar10_valid:max", "latency:min"], "unknown objective 'latency': the table evaluator returns "
                                                "cifar10_valid, cifar10_valid_test"),
        (["params_mb:min", "params_mb:max"], "objective params_mb is given twice"),
        (["cifar10_valid:up", "params_mb:min"], "the direction must be max or min, not 'up'"),
    ):
        done = _cli(["search", "--budget", "5", *(a for o in objectives for a in ("--objective", o))], env)
        assert done.returncode == 2 and message in done.stderr, done.stderr
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    listed = _cli(["runs", "--json"], env)
    assert json.loads(listed.stdout) == []  # nothing was stored


@pytest.mark.e2e
def test_plot_draws_the_fronts_and_refuses_mixed_runs(tmp_path: Path, table_path: str) -> None:
    pytest.importorskip("matplotlib")
    env = _env(tmp_path, table_path)
    for run_id, extra in (("a", ["--objective", PAIR[0], "--objective", PAIR[1]]),
                          ("b", ["--objective", PAIR[0], "--objective", PAIR[1]]), ("c", [])):
        done = _cli(["search", "--strategy", "rea", "--budget", "20", "--run-id", run_id, *extra], env)
        assert done.returncode == 0, done.stderr
    out = tmp_path / "front.png"
    done = _cli(["plot", "a", "b", "--out", str(out)], env)
    assert done.returncode == 0 and out.stat().st_size > 10_000, done.stderr
    mixed = _cli(["plot", "a", "c", "--out", str(out)], env)
    assert mixed.returncode == 2 and "same objectives" in mixed.stderr and mixed.stderr.count("\n") == 1
    bad = _cli(["show", "a", "--hv-ref", "x,y"], env)
    assert bad.returncode == 2 and "--hv-ref 'x,y' must be numbers" in bad.stderr
    bad_search = _cli(["search", "--objective", "cifar10_valid:best", "--objective", "params_mb:min"], env)
    assert bad_search.returncode == 2 and "must be max or min" in bad_search.stderr
    assert "Traceback" not in bad_search.stderr and bad_search.stderr.count("\n") == 1


# ================================================================ the LLM roles, on the fake OpenAI server
@pytest.mark.parametrize("strategy", ["collm", "hybrid", "lmsearcher"])
def test_llm_roles_are_told_the_objectives_and_shown_the_front(tmp_path: Path, table_path: str, llm_env,
                                                              strategy: str) -> None:
    from fake_openai import FakeOpenAIServer, Reply
    from test_collm import Script, fresh_codes, role_of

    script = Script(fresh_codes(6))

    def answer(request: dict) -> Reply:
        system = request["messages"][0]["content"]
        if "Ranker" in system:  # LM-Searcher's LLM ranker: the first pool code it was shown
            pool = [line for line in request["messages"][-1]["content"].split("## Candidate pool")[1].splitlines()
                    if line.strip().isdigit()]
            return Reply.text(json.dumps({"code": pool[0].strip()}))
        return script(request)

    with FakeOpenAIServer(default=Reply.dynamic(answer)) as server:
        llm_env(server)
        ws = Workspace(tmp_path / "runs", table_path=table_path)
        result = ws.search(strategy=strategy, budget=24, batch_size=4 if strategy != "lmsearcher" else 1,
                           seed=1, llm="endpoint", objectives=PAIR, run_id="llm-mo")
        requests = [r.json for r in server.chat_requests]
    assert result.evaluations == 24 and result.pareto.front
    _check_front(ws, "llm-mo", PAIR)
    assert all("front_size" in r for r in ws.run("llm-mo").rounds())
    systems = [r["messages"][0]["content"] for r in requests]
    users = [[m for m in r["messages"] if m["role"] == "user"][-1]["content"] for r in requests]
    if strategy == "lmsearcher":
        ranker = [u for s, u in zip(systems, users) if "Ranker" in s]
        assert ranker and all("a place on the Pareto front of cifar10_valid (maximise) against lat_ms_pixel3 "
                              "(minimise)" in u for u in ranker)
        return
    navigator = [(s, u) for s, u, r in zip(systems, users, requests) if role_of(r) == "navigator"]
    generator = [u for u, r in zip(users, requests) if role_of(r) == "generator"]
    assert navigator and generator
    assert all("best trade-offs between cifar10_valid (maximise) against lat_ms_pixel3 (minimise)" in s
               for s, _ in navigator)
    later = navigator[-1][1]
    assert "## The Pareto front so far" in later and "lat_ms_pixel3=" in later and "cifar10_valid=" in later
    assert all(u.startswith("## Goal\nThe search looks for the best trade-offs") for u in generator)


def test_single_objective_prompts_are_unchanged(tmp_path: Path, table_path: str, llm_env) -> None:
    from fake_openai import FakeOpenAIServer, Reply
    from test_collm import Script, fresh_codes, role_of

    with FakeOpenAIServer(default=Reply.dynamic(Script(fresh_codes(2)))) as server:
        llm_env(server)
        Workspace(tmp_path / "runs", table_path=table_path).search(strategy="collm", budget=8, batch_size=4,
                                                                   llm="endpoint", run_id="one")
        requests = [r.json for r in server.chat_requests]
    generator = [[m for m in r["messages"] if m["role"] == "user"][-1]["content"] for r in requests
                 if role_of(r) == "generator"]
    assert generator and all(u.startswith("## Strategy") for u in generator)
    navigator = [r["messages"][1]["content"] for r in requests if role_of(r) == "navigator"]
    assert all("## Best architectures so far" in u for u in navigator)


def test_the_ranked_search_evaluates_each_networks_cheapest_code(tmp_path: Path, table_path: str) -> None:
    """A network trains alike whatever its code, but the table's latency counts its dead edges: once the ranker
    picks (after the random initial trials), every code it evaluates is the lowest-latency legal code of its
    network, the one that can reach the front."""
    from collm_nas.evaluators.nb201_table import NB201TableEvaluator
    from collm_nas.spaces import NB201Space

    space = NB201Space()
    evaluator = NB201TableEvaluator(table_path, dataset="cifar10")
    evaluator.want_metrics(["lat_ms_pixel3"])
    latency = {t.ncode: t.metrics["lat_ms_pixel3"] for t in evaluator.evaluate(list(evaluator.table.rows))}
    cheapest: dict[str, float] = {}
    for code, ms in latency.items():
        if not space.structural_problems(code):
            key = space.network_key(code)
            cheapest[key] = min(ms, cheapest.get(key, ms))
    ws = Workspace(tmp_path / "runs", table_path=table_path)
    ws.search(strategy="lmsearcher", budget=25, seed=2, objectives=PAIR, llm="none", run_id="cheap")
    trials = ws.run("cheap").trials()
    ranked = trials[10:]  # the first ten are the random initial trials
    assert len(ranked) == 15
    dearer = [t.ncode for t in ranked if latency[t.ncode] > cheapest[space.network_key(t.ncode)]]
    assert not dearer, f"ranked picks with a cheaper code of the same network: {dearer}"
    # The random initial trials draw codes, not networks: some are dearer than their network's cheapest code,
    # so the check above is not true of any code.
    assert any(latency[t.ncode] > cheapest[space.network_key(t.ncode)] for t in trials[:10])
