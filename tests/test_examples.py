"""Bring your own space and evaluator: examples/digits_mlp.yaml searched with
examples.digits_mlp:evaluate (a real MLP trained on the digits) through the real CLI and API:
several strategies, a SIGKILL then resume, and an approval pause answered.

The example's evaluations take a fraction of a second to about a second each on one core.
"""

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
from collm_nas.spaces import SPACES

ROOT = Path(__file__).resolve().parents[1]
SPACE = str(ROOT / "examples" / "digits_mlp.yaml")
EVALUATOR = "examples.digits_mlp:evaluate"
COMMON = ["--space", SPACE, "--evaluator", EVALUATOR, "--metric", "valid_acc", "--llm", "none"]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    e = dict(os.environ)
    e.update(COLLM_NAS_RUNS_DIR=str(tmp_path / "runs"), COLLM_NAS_PROGRESS="never", OMP_NUM_THREADS="1",
             PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), e.get("PYTHONPATH", "")) if p))
    return e


def _cli(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "collm_nas.cli", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def _trials(db: Path, run_id: str) -> dict[str, tuple]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT ncode, value, metrics FROM trials WHERE run_id = ?", (run_id,)).fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}


def test_example_space_and_evaluator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT))
    from examples.digits_mlp import build_mlp, evaluate

    space = SPACES.resolve(SPACE)
    assert space.name == "digits-mlp" and space.length == 8
    arch = space.decode(space.encode({"depth": "2", "width_1": "64", "width_2": "32", "activation": "relu",
                                      "batch_norm": "true", "dropout": "0.1", "lr": "0.003"}))
    assert "width_3" not in arch  # inactive at depth 2
    net = build_mlp(arch)
    assert sum(p.numel() for p in net.parameters()) == 64 * 64 + 2 * 64 + 64 * 32 + 2 * 32 + 32 * 10 + 10
    first, again = evaluate(arch, seed=3), evaluate(arch, seed=3)
    assert first["valid_acc"] > 80.0, first  # chance is 10%
    assert {k: v for k, v in first.items() if k != "train_s"} == {k: v for k, v in again.items() if k != "train_s"}


@pytest.mark.e2e
def test_cli_search_with_rea(env: dict[str, str]) -> None:
    rea = _cli(["search", *COMMON, "--strategy", "rea", "--budget", "5", "--run-id", "mlp-rea", "--json"], env)
    assert rea.returncode == 0, rea.stderr
    data = json.loads(rea.stdout)
    assert data["status"] == "finished" and data["evaluations"] == 5 and data["searched_metric"] == "valid_acc"
    assert data["best"]["metrics"]["valid_acc"] > 80.0 and data["best"]["metrics"]["params"] > 0
    assert data["config"]["space_definition"]["name"] == "digits-mlp"


@pytest.mark.e2e
def test_api_lmsearcher_with_the_learned_ranker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an LLM: 10 random trials, then the learned ranker picks from candidate pools."""
    monkeypatch.syspath_prepend(str(ROOT))
    ws = Workspace(tmp_path / "runs")
    result = ws.search(space=SPACE, evaluator=EVALUATOR, metric="valid_acc", strategy="lmsearcher", budget=12,
                       batch_size=2, seed=1, llm="none", run_id="mlp-lm")
    assert result.status == "finished" and result.evaluations == 12
    trials = ws.run("mlp-lm").trials()
    assert len({t.ncode for t in trials}) == 12 and all(t.status == "ok" for t in trials)
    assert all(SPACES.resolve(SPACE).decode(t.ncode) for t in trials)


@pytest.mark.parametrize("strategy", ["random", "local", "collm", "hybrid"])
def test_api_other_strategies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, strategy: str) -> None:
    """collm and hybrid without an LLM run their LLM-free fallback (local; hybrid's learned ranker)."""
    monkeypatch.syspath_prepend(str(ROOT))
    result = Workspace(tmp_path / "runs").search(space=SPACE, evaluator=EVALUATOR, metric="valid_acc",
                                                 strategy=strategy, budget=3, batch_size=3, seed=2, llm="none")
    assert result.status == "finished" and result.evaluations == 3
    assert result.best.metrics["valid_acc"] > 50.0


@pytest.mark.e2e
def test_sigkill_then_resume_loses_and_repeats_nothing(env: dict[str, str], tmp_path: Path) -> None:
    """Killed while the 4th architecture trains (tests/gated_example.py blocks there and says so): the three
    recorded before are kept, and the resumed search evaluates the other five only."""
    db = tmp_path / "runs" / "collm-nas.db"
    gate = tmp_path / "gate"
    common = [a if a != EVALUATOR else "gated_example:evaluate" for a in COMMON]
    args = ["search", *common, "--strategy", "rea", "--budget", "8", "--seed", "4", "--run-id", "victim", "--json"]
    gated = dict(env, GATE_FILE=str(gate), GATE_AT="4", PYTHONPATH=os.pathsep.join([str(ROOT / "tests"),
                                                                                   env["PYTHONPATH"]]))
    proc = subprocess.Popen([sys.executable, "-m", "collm_nas.cli", *args], env=gated, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not gate.exists():
        assert proc.poll() is None, f"search ended before it could be killed: {proc.communicate()}"
        assert time.time() < deadline, "the search made no progress"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    before = _trials(db, "victim")
    assert len(before) == 3

    resumed = _cli(["resume", "victim", "--json"], dict(gated, GATE_FILE=""))
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["evaluations"] == 8
    after = _trials(db, "victim")
    assert len(after) == 8 and all(after[code] == row for code, row in before.items())


@pytest.mark.e2e
def test_approval_pause_is_answered_with_an_edit(env: dict[str, str]) -> None:
    started = _cli(["search", *COMMON, "--strategy", "random", "--budget", "3", "--batch-size", "3",
                    "--approval", "every-round", "--run-id", "ask", "--json"], env)
    assert started.returncode == 0, started.stderr
    assert json.loads(started.stdout)["status"] == "awaiting approval"
    pause = Workspace(env["COLLM_NAS_RUNS_DIR"]).pending_approval("ask")
    batch = [c["ncode"] for c in pause["candidates"]]
    assert len(batch) == 3 and all(c["decoded"]["activation"] for c in pause["candidates"])
    space = SPACES.resolve(SPACE)
    extra = space.encode({"depth": "1", "width_1": "128", "activation": "relu", "batch_norm": "false",
                          "dropout": "0.0", "lr": "0.01"})
    assert extra not in batch
    answered = _cli(["approve", "ask", "--decision", "edit", "--drop", batch[0], "--add", extra, "--json"], env)
    assert answered.returncode == 0, answered.stderr
    result = json.loads(answered.stdout)
    assert result["status"] == "finished" and result["evaluations"] == 3
    codes = set(_trials(Path(env["COLLM_NAS_RUNS_DIR"]) / "collm-nas.db", "ask"))
    assert codes == {*batch[1:], extra}
