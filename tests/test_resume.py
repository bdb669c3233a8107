"""Crash safety: a search killed (SIGKILL, Ctrl-C) and resumed loses nothing
and evaluates nothing twice; checkpoints stay small as trials pile up."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from collm_nas import Workspace

ROOT = Path(__file__).resolve().parents[1]


def _env(tmp_path: Path, table_path: str, **extra: str) -> dict[str, str]:
    e = dict(os.environ)
    e.update(COLLM_NAS_RUNS_DIR=str(tmp_path / "runs"), COLLM_NAS_NB201_TABLE=table_path,
             PYTHONPATH=str(ROOT / "tests"), **extra)
    return e


def _trials(db: Path, run_id: str) -> dict[str, tuple]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT ncode, value, metrics FROM trials WHERE run_id = ?", (run_id,)).fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}


def _codes_in_order(db: Path, run_id: str) -> list[str]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT ncode FROM trials WHERE run_id = ? ORDER BY seq", (run_id,)).fetchall()
    return [r[0] for r in rows]


def _start(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "collm_nas.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_trials(db: Path, run_id: str, at_least: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, f"search ended before it could be stopped: {proc.communicate()}"
        if db.exists():
            try:
                if len(_trials(db, run_id)) >= at_least:
                    return
            except sqlite3.OperationalError:
                pass
        time.sleep(0.02)
    raise AssertionError("search made no progress")


@pytest.mark.e2e
@pytest.mark.parametrize("strategy,batch", [("rea", "1"), ("local", "1"), ("random", "7"), ("lmsearcher", "3")])
def test_sigkill_then_resume_ends_with_exactly_budget_trials(tmp_path: Path, table_path: str,
                                                             strategy: str, batch: str) -> None:
    budget = 60 if strategy == "lmsearcher" else 120  # the learned ranker refits every round
    log = tmp_path / "evaluations.log"
    env = _env(tmp_path, table_path, E2E_EVAL_LOG=str(log), E2E_EVAL_SLEEP="0.01")
    db = tmp_path / "runs" / "collm-nas.db"
    args = ["search", "--evaluator", "e2e_evaluator:score", "--strategy", strategy, "--budget", str(budget),
            "--batch-size", batch, "--seed", "5", "--llm", "none", "--run-id", "victim", "--json"]
    proc = _start(args, env)
    _wait_for_trials(db, "victim", 30, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    before = _trials(db, "victim")
    assert 30 <= len(before) < budget

    listed = subprocess.run([sys.executable, "-m", "collm_nas.cli", "runs", "--json"], env=env,
                            capture_output=True, text=True, timeout=60)
    assert json.loads(listed.stdout)[0]["status"] == "stopped (resumable)"

    resumed = subprocess.run([sys.executable, "-m", "collm_nas.cli", "resume", "victim", "--json"], env=env,
                             capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    result = json.loads(resumed.stdout)
    after = _trials(db, "victim")
    assert result["evaluations"] == budget == len(after)
    assert all(after[code] == row for code, row in before.items()), "a recorded trial was lost or changed"
    calls = log.read_text().splitlines()
    assert len(set(calls)) == budget
    # Only an evaluation in flight at the moment of the kill may run again.
    assert len(calls) <= budget + 1
    # The resumed run is the run that was never killed: same codes, same order.
    whole = subprocess.run([sys.executable, "-m", "collm_nas.cli", *args[:-3], "--run-id", "whole", "--json"],
                           env=_env(tmp_path, table_path), capture_output=True, text=True, timeout=300)
    assert whole.returncode == 0, whole.stderr
    assert _codes_in_order(db, "whole") == _codes_in_order(db, "victim")


@pytest.mark.e2e
def test_ctrl_c_marks_run_interrupted_and_resume_finishes(tmp_path: Path, table_path: str) -> None:
    env = _env(tmp_path, table_path, E2E_EVAL_SLEEP="0.01")
    db = tmp_path / "runs" / "collm-nas.db"
    proc = _start(["search", "--evaluator", "e2e_evaluator:score", "--strategy", "rea", "--budget", "150",
                   "--run-id", "ctrlc", "--seed", "2"], env)
    _wait_for_trials(db, "ctrlc", 20, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "collm-nas resume ctrlc" in err and "Traceback" not in err
    ws = Workspace(tmp_path / "runs", table_path=table_path)
    assert ws.run("ctrlc").info.status == "interrupted"
    out = subprocess.run([sys.executable, "-m", "collm_nas.cli", "resume", "ctrlc", "--json"], env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["evaluations"] == 150 == len(_trials(db, "ctrlc"))


def _latest_checkpoint_bytes(db: Path, run_id: str) -> int:
    with sqlite3.connect(db) as conn:
        row = conn.execute(
            "SELECT length(checkpoint) + length(metadata) FROM checkpoints WHERE thread_id = ? "
            "ORDER BY rowid DESC LIMIT 1", (run_id,)).fetchone()
    return row[0]


@pytest.mark.e2e
def test_checkpoint_size_does_not_grow_with_trials(tmp_path: Path, table_path: str) -> None:
    ws = Workspace(tmp_path / "runs", table_path=table_path)
    ws.search(strategy="rea", budget=10, seed=0, run_id="small")
    ws.search(strategy="rea", budget=600, seed=0, run_id="large")
    small = _latest_checkpoint_bytes(ws.db_path, "small")
    large = _latest_checkpoint_bytes(ws.db_path, "large")
    assert large < small * 1.2, (small, large)


def test_progress_stream_and_python_api(tmp_path: Path, table_path: str) -> None:
    ws = Workspace(tmp_path / "runs", table_path=table_path)
    events: list[dict] = []
    result = ws.search(strategy="random", dataset="cifar100", budget=12, batch_size=4, seed=3,
                       on_progress=events.append)
    rounds = [e for e in events if e["event"] == "round"]
    assert [e["evaluated"] for e in rounds] == [4, 8, 12]
    assert events[-1]["event"] == "finished" and events[-1]["stop_reason"] == "budget"
    assert result.best is not None and result.best.ncode == rounds[-1]["best"]["ncode"]
    run = ws.run(result.run_id)
    assert len(run.trials()) == 12 and run.best().ncode == result.best.ncode
    figures = run.rounds()
    assert [f["round"] for f in figures] == [1, 2, 3] and all(f["evaluated"] == 4 for f in figures)
    assert ws.runs()[0].status == "finished"
