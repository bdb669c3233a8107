"""The SQLite trial store and the RunHistory view over it."""

from __future__ import annotations

import dataclasses
import os
import socket
import sqlite3
import subprocess
import sys

import pytest

from collm_nas.evaluators import TrialResult
from collm_nas.graphs.store import ACTIVE, FINISHED, INTERRUPTED, RunHistory, TrialStore


@pytest.fixture()
def store(tmp_path):
    s = TrialStore(tmp_path / "sub" / "trials.sqlite")  # parent folders are created
    yield s
    s.close()


def result(code: str, value: float | None = None, status: str = "ok", error: str | None = None) -> TrialResult:
    metrics = {"acc": value} if value is not None else {}
    return TrialResult(code, f"arch-{code}", metrics=metrics, cost={"s": 0.1}, status=status, error=error)


def add(store: TrialStore, run_id: str, code: str, value: float | None, round_no: int = 1) -> bool:
    status = "ok" if value is not None else "failed"
    return store.add_trial(run_id, result(code, value, status, None if value is not None else "boom"), round_no, value)


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ======================================================================= runs
def test_create_get_and_list_runs(store):
    assert store.get_run("missing") is None
    assert store.list_runs() == []
    store.create_run("r1", {"strategy": "rea", "budget": 10})
    store.create_run("r2", {"strategy": "random"})
    run = store.get_run("r1")
    assert run.run_id == "r1"
    assert run.status == ACTIVE
    assert run.config == {"strategy": "rea", "budget": 10}
    assert run.n_trials == 0 and run.best_ncode is None and run.best_value is None and run.stop_reason is None
    assert run.pid == os.getpid() and run.host == socket.gethostname()
    assert run.created_at <= run.updated_at
    assert [r.run_id for r in store.list_runs()] == ["r1", "r2"]


def test_create_run_twice_fails(store):
    store.create_run("r1", {})
    with pytest.raises(sqlite3.IntegrityError):
        store.create_run("r1", {})
    assert len(store.list_runs()) == 1


def test_status_and_summary(store):
    store.create_run("r1", {})
    add(store, "r1", "333132", 91.6)
    add(store, "r1", "000300", None)
    store.update_summary("r1", "333132", 91.6)
    run = store.get_run("r1")
    assert (run.best_ncode, run.best_value, run.n_trials) == ("333132", 91.6, 2)
    store.set_status("r1", FINISHED, "budget")
    assert (store.get_run("r1").status, store.get_run("r1").stop_reason) == (FINISHED, "budget")
    store.set_status("r1", INTERRUPTED)  # no reason given: the old one stays
    assert store.get_run("r1").stop_reason == "budget"


def test_display_status(store):
    store.create_run("live", {})
    live = store.get_run("live")
    assert live.process_alive and live.display_status == "running"

    store.create_run("dead", {})
    with sqlite3.connect(store.path) as conn:
        conn.execute("UPDATE runs SET pid = ? WHERE run_id = 'dead'", (dead_pid(),))
    dead = store.get_run("dead")
    assert dead.status == ACTIVE
    assert not dead.process_alive
    assert dead.display_status == "stopped (resumable)"

    assert dataclasses.replace(live, status=INTERRUPTED).display_status == "interrupted (resumable)"
    assert dataclasses.replace(live, status=FINISHED).display_status == FINISHED
    assert not dataclasses.replace(live, status=FINISHED).process_alive
    # A run on another host cannot be probed: it shows as running.
    elsewhere = dataclasses.replace(dead, host="another-host")
    assert not elsewhere.process_alive and elsewhere.display_status == "running"


# ===================================================================== trials
def test_add_trial_is_idempotent(store):
    store.create_run("r1", {})
    assert store.add_trial("r1", result("333132", 91.6), 1, 91.6) is True
    before = store.trials("r1")
    # Same (run, ncode) again, with different content: ignored.
    assert store.add_trial("r1", result("333132", 10.0, "failed", "x"), 7, 10.0) is False
    after = store.trials("r1")
    assert after == before
    [t] = after
    assert (t.ncode, t.arch, t.round, t.status, t.value, t.error) == ("333132", "arch-333132", 1, "ok", 91.6, None)
    assert t.metrics == {"acc": 91.6} and t.cost == {"s": 0.1}
    assert store.count_trials("r1") == 1
    # The same code in another run is a separate trial.
    store.create_run("r2", {})
    assert store.add_trial("r2", result("333132", 50.0), 1, 50.0) is True
    assert store.count_trials("r2") == 1 and store.count_trials("r1") == 1


def test_trials_order_and_incremental_reads(store):
    store.create_run("r1", {})
    store.create_run("r2", {})
    codes = ["333132", "000300", "111111", "222222", "010003"]
    for i, code in enumerate(codes):
        add(store, "r1", code, float(i), round_no=1 + i // 2)
        add(store, "r2", code[::-1], float(i))
    trials = store.trials("r1")
    assert [t.ncode for t in trials] == codes
    assert [t.seq for t in trials] == sorted(t.seq for t in trials)
    assert [t.round for t in trials] == [1, 1, 2, 2, 3]
    assert [t.ncode for t in store.trials("r1", after_seq=trials[2].seq)] == codes[3:]
    assert store.trials("r1", after_seq=trials[-1].seq) == []
    assert store.trials("nobody") == []


def test_failed_trial_round_trip(store):
    store.create_run("r1", {})
    add(store, "r1", "000000", None)
    [t] = store.trials("r1")
    assert t.status == "failed" and t.value is None and t.error == "boom" and not t.ok


def test_recorded(store):
    store.create_run("r1", {})
    store.create_run("r2", {})
    add(store, "r1", "333132", 1.0)
    add(store, "r1", "000300", 2.0)
    add(store, "r2", "111111", 3.0)
    assert store.recorded("r1", []) == set()
    assert store.recorded("r1", ["333132", "111111", "444444"]) == {"333132"}
    assert store.recorded("r1", ["000300", "333132"]) == {"000300", "333132"}
    assert store.recorded("r2", ["333132", "111111"]) == {"111111"}


def test_rounds(store):
    store.create_run("r1", {})
    store.add_round("r1", 2, {"evaluated": 4, "best_value": 90.0})
    store.add_round("r1", 1, {"evaluated": 3})
    store.add_round("r1", 2, {"evaluated": 5})  # a re-run round replaces its figures
    assert store.rounds("r1") == [{"round": 1, "evaluated": 3}, {"round": 2, "evaluated": 5}]
    assert store.rounds("other") == []


def test_store_reopens_with_data(tmp_path):
    path = tmp_path / "t.sqlite"
    first = TrialStore(path)
    first.create_run("r1", {"a": 1})
    add(first, "r1", "333132", 1.0)
    first.close()
    second = TrialStore(path)
    assert second.get_run("r1").config == {"a": 1}
    assert [t.ncode for t in second.trials("r1")] == ["333132"]
    assert add(second, "r1", "333132", 2.0) is False
    second.close()


# ================================================================ RunHistory
def test_run_history_refresh_is_incremental(store):
    store.create_run("r1", {})
    add(store, "r1", "333132", 80.0, round_no=1)
    history = RunHistory(store, "r1", mode="max")
    assert len(history) == 1 and "333132" in history
    add(store, "r1", "000300", 90.0, round_no=2)
    add(store, "r1", "111111", None, round_no=2)
    assert len(history) == 1  # not yet refreshed
    assert "000300" not in history
    first = history.trials()[0]
    assert history.refresh() is history
    assert len(history) == 3
    assert history.trials()[0] is first  # earlier trials are kept, not re-read
    assert [t.ncode for t in history.trials()] == ["333132", "000300", "111111"]
    assert history.get("000300").value == 90.0 and history.get("444444") is None
    assert [t.ncode for t in history.in_round(2)] == ["000300", "111111"]
    assert history.in_round(9) == []
    history.refresh()
    assert len(history) == 3  # nothing new: nothing doubled
    # Another run's trials never leak in.
    store.create_run("r2", {})
    add(store, "r2", "222222", 99.0)
    assert "222222" not in history.refresh()


@pytest.mark.parametrize(
    "mode,best_code,best_value", [("max", "111111", 95.0), ("min", "000300", 60.0)]
)
def test_run_history_best(store, mode, best_code, best_value):
    store.create_run("r1", {})
    history = RunHistory(store, "r1", mode=mode)
    assert history.best() is None
    add(store, "r1", "000000", None)  # failed trials never win
    history.refresh()
    assert history.best() is None
    for code, value in [("333132", 80.0), ("000300", 60.0), ("111111", 95.0), ("222222", 70.0)]:
        add(store, "r1", code, value)
        history.refresh()  # one at a time: the best is kept incrementally
    assert (history.best().ncode, history.best().value) == (best_code, best_value)
    fresh = RunHistory(store, "r1", mode=mode)  # all at once
    assert (fresh.best().ncode, fresh.best().value) == (best_code, best_value)


def test_run_history_ties_keep_the_first(store):
    store.create_run("r1", {})
    add(store, "r1", "333132", 90.0)
    add(store, "r1", "000300", 90.0)
    assert RunHistory(store, "r1").best().ncode == "333132"
    assert RunHistory(store, "r1", mode="min").best().ncode == "333132"
