"""One writer per run, on SQLite and on PostgreSQL: two ``collm-nas resume`` (or ``approve``) of the
same run at the same moment: exactly one goes on, the other is refused in one line, and nothing
is evaluated or recorded twice.

Both commands are held at the door of ``claim`` until the same instant (a wrapper around the
real CLI; nothing in the product is patched but the timing), so they really race for the run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from collm_nas import Workspace


pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[1]
REFUSALS = ("being run by process", "still running in process", "changed while this command was starting",
            "already finished", "not waiting for approval")

# The real CLI, with every claim held until a given instant: both contenders have passed every
# earlier check (status, liveness, pending approval) and claim together.
_AT_ONCE = textwrap.dedent("""
    import sys, time
    from collm_nas.storage import sql as store
    at = float(sys.argv[1])
    real = store.BaseTrialStore.claim
    def claim(self, run_id, seen=None):
        while time.time() < at:
            time.sleep(0.0005)
        return real(self, run_id, seen=seen)
    store.BaseTrialStore.claim = claim
    from collm_nas.cli import main
    sys.exit(main(sys.argv[2:]))
""")


@pytest.fixture(params=["sqlite", "postgres"])
def env(request, tmp_path: Path, table_path: str) -> dict[str, str]:
    e = dict(os.environ)
    e.pop("COLLM_NAS_STORE", None)
    e.update(COLLM_NAS_RUNS_DIR=str(tmp_path / "runs"), COLLM_NAS_NB201_TABLE=table_path,
             PYTHONPATH=str(ROOT / "tests"), XDG_CACHE_HOME=str(tmp_path / "cache"),
             E2E_EVAL_LOG=str(tmp_path / "evaluations.log"))
    if request.param == "postgres":
        e["COLLM_NAS_STORE"] = request.getfixturevalue("postgres_url")
    return e


def _workspace(env: dict[str, str]) -> Workspace:
    return Workspace(env["COLLM_NAS_RUNS_DIR"], table_path=env["COLLM_NAS_NB201_TABLE"],
                     store=env.get("COLLM_NAS_STORE"))


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "collm_nas.cli", *args], env=env, capture_output=True, text=True,
                          timeout=240)


def _at_once(args: list[str], env: dict[str, str], n: int = 2) -> list[subprocess.CompletedProcess]:
    at = str(time.time() + 8.0)  # time for both to start on a busy machine
    procs = [subprocess.Popen([sys.executable, "-c", _AT_ONCE, at, *args], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(n)]
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        out.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return out


def _split(done: list[subprocess.CompletedProcess]) -> tuple[subprocess.CompletedProcess, subprocess.CompletedProcess]:
    winners = [d for d in done if d.returncode == 0]
    losers = [d for d in done if d.returncode != 0]
    assert len(winners) == 1 and len(losers) == 1, [(d.returncode, d.stderr[-500:]) for d in done]
    loser = losers[0]
    assert loser.returncode == 2 and loser.stderr.count("\n") == 1 and "Traceback" not in loser.stderr, loser.stderr
    assert any(r in loser.stderr for r in REFUSALS), loser.stderr
    return winners[0], loser


def _calls(env: dict[str, str]) -> list[str]:
    log = Path(env["E2E_EVAL_LOG"])
    return log.read_text().splitlines() if log.exists() else []


def test_two_resumes_at_once_exactly_one_proceeds(env: dict[str, str]) -> None:
    budget = 50
    proc = subprocess.Popen([sys.executable, "-m", "collm_nas.cli", "search", "--evaluator", "e2e_evaluator:score",
                             "--strategy", "random", "--budget", str(budget), "--run-id", "two", "--llm", "none",
                             "--no-progress"], env={**env, "E2E_EVAL_SLEEP": "0.05"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ws = _workspace(env)
    deadline = time.time() + 90
    while time.time() < deadline and (ws.store.get_run("two") is None or ws.store.count_trials("two") < 8):
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    before = {t.ncode: (t.value, t.metrics) for t in ws.run("two").trials()}
    assert 8 <= len(before) < budget and ws.run("two").status == "stopped (resumable)"

    winner, loser = _split(_at_once(["resume", "two", "--json"], {**env, "E2E_EVAL_SLEEP": "0.05"}))
    assert json.loads(winner.stdout)["evaluations"] == budget
    after = {t.ncode: (t.value, t.metrics) for t in ws.run("two").trials()}
    assert len(after) == budget and all(after[c] == row for c, row in before.items())
    calls = _calls(env)
    assert len(set(calls)) == budget and len(calls) <= budget + 1  # only the one in flight at the kill ran again
    assert ws.run("two").status == "finished"


def test_two_approvals_at_once_exactly_one_proceeds(env: dict[str, str]) -> None:
    started = _cli(["search", "--evaluator", "e2e_evaluator:score", "--strategy", "random", "--budget", "8",
                    "--batch-size", "4", "--approval", "every-round", "--run-id", "ap", "--llm", "none",
                    "--no-progress"], env)
    assert started.returncode == 0, started.stderr
    ws = _workspace(env)
    batch = [c["ncode"] for c in ws.pending_approval("ap")["candidates"]]
    assert len(batch) == 4 and ws.run("ap").trials() == []

    winner, loser = _split(_at_once(["approve", "ap", "--decision", "approve", "--json"],
                                    {**env, "E2E_EVAL_SLEEP": "0.1"}))
    result = json.loads(winner.stdout)
    assert result["status"] == "awaiting approval" and result["evaluations"] == 4
    assert [t.ncode for t in ws.run("ap").trials()] == batch  # the batch, evaluated once
    assert len(_calls(env)) == 4
    assert ws.pending_approval("ap")["round"] == 2
    assert [r["human"]["action"] for r in ws.run("ap").rounds()] == ["approve"]
    done = _cli(["approve", "ap", "--decision", "approve", "--json"], env)
    assert done.returncode == 0 and json.loads(done.stdout)["status"] == "finished", done.stderr
    assert len(ws.run("ap").trials()) == 8 == len(set(_calls(env))) == len(_calls(env))


def test_a_finished_run_is_never_run_again(env: dict[str, str]) -> None:
    done = _cli(["search", "--strategy", "rea", "--budget", "5", "--run-id", "f", "--no-progress"], env)
    assert done.returncode == 0, done.stderr
    ws = _workspace(env)
    from collm_nas.core.errors import UserError

    with pytest.raises(UserError, match="already finished"):
        ws.store.claim("f")
    again = _cli(["resume", "f"], env)
    assert again.returncode == 2 and "already finished" in again.stderr and again.stderr.count("\n") == 1
    assert len(ws.run("f").trials()) == 5 and ws.run("f").status == "finished"
