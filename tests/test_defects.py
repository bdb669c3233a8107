"""Defects found when the product was tried as a new user would; each test failed before its fix."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import textwrap
from pathlib import Path

import pytest

from collm_nas import Workspace
from collm_nas.core import UserError

from cli_runner import run_cli

ROOT = Path(__file__).resolve().parents[1]


def _cli(args: list[str], env: dict[str, str], cwd: Path, *, in_process: bool = True) -> subprocess.CompletedProcess:
    return run_cli(args, env=env, cwd=cwd, in_process=in_process)


def _one_line_error(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    return done.stderr


@pytest.mark.e2e
def test_show_runs_plot_and_export_never_import_the_runs_evaluator(tmp_path: Path, table_path: str) -> None:
    """`show` of a run searched with `--evaluator ev:evaluate` failed with "cannot import evaluator module 'ev'"
    unless PYTHONPATH named it: reading a run must never import its evaluator."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "ev.py").write_text(textwrap.dedent("""
        def evaluate(arch):
            convs = sum(op.startswith("nor_conv") for op in arch.values())
            return {"score": float(convs), "convs": float(convs)}
    """))
    runs = tmp_path / "runs"
    env = dict(os.environ, COLLM_NAS_RUNS_DIR=str(runs), COLLM_NAS_NB201_TABLE=table_path, PYTHONPATH=str(code))
    env.pop("COLLM_NAS_STORE", None)
    done = _cli(["search", "--evaluator", "ev:evaluate", "--metric", "score", "--strategy", "random", "--budget", "12",
                 "--run-id", "user", "--json"], env, cwd=tmp_path, in_process=False)
    assert done.returncode == 0, done.stderr
    (code / "ev.py").unlink()  # the evaluator is gone for good
    bare = {k: v for k, v in env.items() if k != "PYTHONPATH"}
    shown = _cli(["show", "user", "--format", "json"], bare, cwd=tmp_path, in_process=False)
    assert shown.returncode == 0, shown.stderr
    assert len(json.loads(shown.stdout)["trials"]) == 12
    assert _cli(["show", "user"], bare, cwd=tmp_path, in_process=False).returncode == 0
    listed = _cli(["runs", "--json"], bare, cwd=tmp_path, in_process=False)
    assert listed.returncode == 0 and json.loads(listed.stdout)[0]["run_id"] == "user"
    plotted = _cli(["plot", "user", "--out", str(tmp_path / "p.png")], bare, cwd=tmp_path, in_process=False)
    assert plotted.returncode == 0, plotted.stderr
    assert (tmp_path / "p.png").stat().st_size > 1000
    exported = _cli(["export-trajectories", "user", "--out", str(tmp_path / "t.jsonl")], bare, cwd=tmp_path, in_process=False)
    assert exported.returncode == 0, exported.stderr
    result = Workspace(runs).run("user").result()  # the API reads it the same way
    assert result.searched_metric == "score" and result.best.metrics["score"] == max(
        t.metrics["score"] for t in Workspace(runs).run("user").trials())


def test_a_constraint_no_architecture_meets_says_so_and_names_it(tmp_path: Path, table_path: str) -> None:
    """It said "budget 5 is larger than the space ... only 0 legal architectures"."""
    ws = Workspace(tmp_path / "runs", table_path=table_path)
    with pytest.raises(UserError) as err:
        ws.search(strategy="random", budget=5, constraints=["params_mb<=-1"])
    message = str(err.value)
    assert "no architecture" in message and "params_mb<=-1" in message and "larger than the space" not in message
    assert ws.runs() == []  # nothing stored
    # Two constraints that exclude each other are both named.
    with pytest.raises(UserError, match=r"flops_m<=10.*params_mb>=1|params_mb>=1.*flops_m<=10"):
        ws.search(strategy="random", budget=5, constraints=["flops_m<=10", "params_mb>=1"])


def test_the_cli_names_an_unsatisfiable_constraint_in_one_line(tmp_path: Path, table_path: str) -> None:
    env = dict(os.environ, COLLM_NAS_RUNS_DIR=str(tmp_path / "runs"), COLLM_NAS_NB201_TABLE=table_path)
    done = _cli(["search", "--strategy", "random", "--budget", "5", "--constraint", "params_mb<=-1"], env, tmp_path)
    assert "no architecture of space 'nb201' satisfies the constraints" in _one_line_error(done)


def test_studio_runs_use_the_store_setting_the_cli_uses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Studio kept its runs in runs/collm-nas.db even when COLLM_NAS_STORE named another store."""
    from collm_nas.studio import ServerContext, _places

    monkeypatch.delenv("COLLM_NAS_STORE", raising=False)
    db, _ = _places(ServerContext(runs_dir=str(tmp_path / "a")), {})
    assert db == str((tmp_path / "a" / "collm-nas.db").resolve())
    monkeypatch.setenv("COLLM_NAS_STORE", "postgres://someone@127.0.0.1:1/team")
    assert _places(ServerContext(runs_dir=str(tmp_path / "a")), {})[0] == "postgres://someone@127.0.0.1:1/team"
    assert _places(None, {})[0] == "postgres://someone@127.0.0.1:1/team"
    shared = tmp_path / "shared" / "team.db"
    monkeypatch.setenv("COLLM_NAS_STORE", str(shared))
    assert _places(ServerContext(), {})[0] == str(shared.resolve())
    assert Workspace().store_url == str(shared)  # the CLI's and API's store: the same file


def test_rejected_rounds_do_not_count_towards_patience(tmp_path: Path, table_path: str) -> None:
    """Rejected rounds evaluate nothing; they counted as rounds without improvement and stopped the search."""
    ws = Workspace(tmp_path / "runs", table_path=table_path)
    ws.search(strategy="random", budget=8, batch_size=1, seed=0, patience=2, run_id="p", approval="every_round")
    ws.approve("p", "approve")  # round 1: the first trial, the best so far
    for _ in range(3):  # rounds 2-4: rejected
        result = ws.approve("p", "reject", comment="not these")
        assert result.status == "awaiting approval" and result.evaluations == 1
    result = ws.approve("p", "approve")  # round 5 evaluates: one evaluated round without improvement at most
    assert result.status == "awaiting approval", result.stop_reason
    assert result.evaluations == 2
    rounds = ws.run("p").rounds()
    assert [r.get("rejected", False) for r in rounds] == [False, True, True, True, False]


def test_old_checkpoints_are_pruned_and_history_and_fork_still_work(tmp_path: Path, table_path: str,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Checkpoints were never pruned: five per round, for ever."""
    monkeypatch.setenv("COLLM_NAS_KEEP_CHECKPOINTS", "6")
    ws = Workspace(tmp_path / "runs", table_path=table_path)
    ws.search(strategy="rea", budget=60, batch_size=1, seed=2, run_id="long")
    with sqlite3.connect(ws.db_path) as conn:
        count = conn.execute("SELECT COUNT(*) FROM checkpoints WHERE thread_id = 'long'").fetchone()[0]
        writes = conn.execute("SELECT COUNT(*) FROM writes WHERE thread_id = 'long'").fetchone()[0]
    # One per round (60 rounds) and the start, plus at most the 6 most recent.
    assert 61 <= count <= 61 + 6, count
    assert writes <= 6 * 4
    points = ws.history("long")
    assert [p["round"] for p in points] == list(range(61))
    child = ws.fork("long", 30, new_run_id="child")  # replays its parent from round 30 exactly
    assert [t.ncode for t in ws.run("child").trials()] == [t.ncode for t in ws.run("long").trials()]
    assert child.evaluations == 60
    report = ws.prune("long", keep_recent=1)  # on demand too; nothing left to do but the recent ones
    assert report.rounds_kept == 61 and report.kept <= 62
    assert [p["round"] for p in ws.history("long")] == list(range(61))


def test_pruned_checkpoints_leave_no_half_empty_pages(tmp_path: Path, table_path: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Deleting four checkpoints of five left a page per survivor: 10,000 evaluations took 52 MB."""
    monkeypatch.setenv("COLLM_NAS_KEEP_CHECKPOINTS", "6")
    ws = Workspace(tmp_path / "runs", table_path=table_path)
    ws.search(strategy="random", budget=300, batch_size=1, seed=1, run_id="long")
    with sqlite3.connect(ws.db_path) as conn:
        stored = conn.execute("SELECT SUM(length(checkpoint_id) + length(parent_checkpoint_id) + length(checkpoint)"
                              " + length(metadata) + length(thread_id)) FROM checkpoints").fetchone()[0]
        pages = conn.execute("SELECT SUM(pgsize) FROM dbstat WHERE name = 'checkpoints'").fetchone()[0]
        latest = conn.execute("SELECT length(checkpoint) FROM checkpoints ORDER BY checkpoint_id DESC LIMIT 1"
                              ).fetchone()[0]
    assert pages < 1.8 * stored, (pages, stored)
    assert latest < 2000, latest  # short channel versions: was 2,950 bytes


def test_a_run_checkpointed_with_langgraphs_long_versions_resumes(tmp_path: Path, table_path: str,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs written before the short channel versions go on where they stopped."""
    from langgraph.checkpoint.sqlite import SqliteSaver

    from collm_nas.storage.checkpointer import CompactSqliteSaver

    ws = Workspace(tmp_path / "runs", table_path=table_path)
    ws.search(strategy="rea", budget=30, batch_size=2, seed=4, run_id="whole")
    with monkeypatch.context() as old:
        old.setattr(CompactSqliteSaver, "get_next_version", SqliteSaver.get_next_version)

        def stop_at_12(event: dict) -> None:
            if event.get("event") == "round" and event.get("evaluated", 0) >= 12:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            ws.search(strategy="rea", budget=30, batch_size=2, seed=4, run_id="old", on_progress=stop_at_12)
    assert 12 <= ws.run("old").info.n_trials < 30
    done = ws.resume("old")
    assert done.evaluations == 30
    assert [t.ncode for t in ws.run("old").trials()] == [t.ncode for t in ws.run("whole").trials()]
    assert [p["evaluated"] for p in ws.history("old")] == [p["evaluated"] for p in ws.history("whole")]


def test_prune_on_the_command_line(tmp_path: Path, table_path: str) -> None:
    env = dict(os.environ, COLLM_NAS_RUNS_DIR=str(tmp_path / "runs"), COLLM_NAS_NB201_TABLE=table_path,
               COLLM_NAS_KEEP_CHECKPOINTS="1000")
    env.pop("COLLM_NAS_STORE", None)
    assert _cli(["search", "--strategy", "random", "--budget", "20", "--run-id", "r"], env, tmp_path).returncode == 0
    done = _cli(["prune", "r", "--keep", "3", "--json"], env, tmp_path)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["deleted"] > 0 and report["rounds_kept"] == 21 and report["kept"] <= 21 + 3
    assert "keep at least 1" in _one_line_error(_cli(["prune", "r", "--keep", "0"], env, tmp_path))
    assert "unknown run 'nope'" in _one_line_error(_cli(["prune", "nope"], env, tmp_path))
