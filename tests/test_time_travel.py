"""Time travel (history, fork) and the Python API's event stream, on the real graph and SQLite."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from collm_nas import Workspace
from collm_nas.core.errors import UserError


@pytest.fixture
def ws(tmp_path: Path, table_path: str) -> Workspace:
    return Workspace(tmp_path / "runs", table_path=table_path)


def _codes(ws: Workspace, run_id: str) -> list[str]:
    return [t.ncode for t in ws.run(run_id).trials()]


def _rows(ws: Workspace, run_id: str) -> list[tuple]:
    return [(t.ncode, t.round, t.value, t.metrics) for t in ws.run(run_id).trials()]


def test_history_lists_one_checkpoint_per_round(ws: Workspace) -> None:
    ws.search(strategy="rea", budget=12, batch_size=3, seed=2, run_id="p", llm="none")
    points = ws.history("p")
    assert [p["round"] for p in points] == [0, 1, 2, 3, 4]
    assert [p["evaluated"] for p in points] == [0, 3, 6, 9, 12]
    assert points[0]["next"] == ["navigator"] and points[-1]["next"] == []
    assert points[2]["best_value"] == max(t.value for t in ws.run("p").trials() if t.round <= 2)


def test_fork_with_the_same_strategy_replays_the_parent_and_leaves_it_intact(ws: Workspace) -> None:
    ws.search(strategy="rea", budget=30, batch_size=2, seed=3, run_id="p", llm="none")
    parent_before = _rows(ws, "p")
    parent_rounds = ws.run("p").rounds()
    result = ws.fork("p", 5, new_run_id="same")
    assert result.status == "finished" and result.evaluations == 30
    # Same seed, same strategy, same state at round 5: the fork is the parent again.
    assert _codes(ws, "same") == _codes(ws, "p")
    assert ws.run("same").config.parent == {"run_id": "p", "round": 5}
    assert _rows(ws, "p") == parent_before and ws.run("p").rounds() == parent_rounds


def test_fork_with_another_strategy_and_budget_shares_nothing_mutable(ws: Workspace) -> None:
    ws.search(strategy="rea", budget=30, batch_size=2, seed=3, run_id="p", llm="none")
    parent_before = _rows(ws, "p")
    ws.fork("p", 5, new_run_id="other", strategy="local", budget=40)
    fork = _codes(ws, "other")
    assert len(fork) == 40 and fork[:10] == _codes(ws, "p")[:10] and fork[10:] != _codes(ws, "p")[10:30]
    assert ws.run("other").config.strategy == "local"
    # Resuming or extending the fork never touches the parent's rows, and vice versa.
    assert _rows(ws, "p") == parent_before
    created = ws.fork("p", 2, new_run_id="later", start=False)
    assert created.evaluations == 4 and ws.run("later").info.display_status == "interrupted (resumable)"
    assert ws.resume("later").evaluations == 30
    assert _rows(ws, "p") == parent_before and len(_codes(ws, "other")) == 40


def test_fork_errors_are_one_line(ws: Workspace) -> None:
    ws.search(strategy="random", budget=6, batch_size=2, seed=0, run_id="p", llm="none")
    with pytest.raises(UserError, match="no completed round 9; rounds you can fork from: 0, 1, 2, 3"):
        ws.fork("p", 9)
    with pytest.raises(UserError, match="give a budget above that"):
        ws.fork("p", 3)
    with pytest.raises(UserError, match="unknown strategy"):
        ws.fork("p", 1, strategy="nope")
    with pytest.raises(UserError, match="already exists"):
        ws.fork("p", 1, new_run_id="p")


@pytest.mark.e2e
def test_cli_history_and_fork(tmp_path: Path, table_path: str) -> None:
    env = dict(os.environ, COLLM_NAS_RUNS_DIR=str(tmp_path / "runs"), COLLM_NAS_NB201_TABLE=table_path)

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "collm_nas.cli", *args], env=env, capture_output=True,
                              text=True, timeout=120)

    assert cli("search", "--strategy", "rea", "--budget", "8", "--batch-size", "2", "--run-id", "p",
               "--no-progress").returncode == 0
    listed = cli("history", "p")
    assert listed.returncode == 0 and len(listed.stdout.strip().splitlines()) == 1 + 5
    assert [p["round"] for p in json.loads(cli("history", "p", "--json").stdout)] == [0, 1, 2, 3, 4]
    forked = cli("fork", "p", "--round", "2", "--strategy", "random", "--budget", "10", "--run-id", "f",
                 "--json", "--no-progress")
    assert forked.returncode == 0, forked.stderr
    assert json.loads(forked.stdout)["evaluations"] == 10
    bad = cli("fork", "p", "--round", "7")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "rounds you can fork from" in bad.stderr


def test_iter_search_streams_rounds_and_evaluations_and_stopping_keeps_it_resumable(ws: Workspace) -> None:
    seen: list[dict] = []
    for event in ws.iter_search(strategy="rea", budget=40, batch_size=2, seed=1, run_id="s", llm="none"):
        seen.append(event)
        if event["event"] == "round" and event["round"] == 4:
            break
    rounds = [e for e in seen if e["event"] == "round"]
    evaluations = [e for e in seen if e["event"] == "evaluation"]
    assert [e["round"] for e in rounds] == [1, 2, 3, 4]
    assert all(e["summary"] and e["best"]["value"] is not None and e["budget"] == 40 for e in rounds)
    assert [e["evaluated"] for e in rounds] == [2, 4, 6, 8] and len(evaluations) == 8
    assert all(e["status"] == "ok" and isinstance(e["value"], float) for e in evaluations)
    # Stopped at the next event: nothing evaluated is lost, and the run resumes to its budget.
    stopped = ws.run("s")
    assert stopped.info.display_status == "interrupted (resumable)" and 8 <= len(stopped.trials()) <= 10
    events = list(ws.iter_resume("s"))
    assert events[-1]["event"] == "result" and events[-1]["result"].evaluations == 40
    with pytest.raises(UserError, match="already finished"):
        list(ws.iter_resume("s"))
