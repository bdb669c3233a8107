"""The SQLite trial store (the store contract, and what is SQLite's own) and the RunHistory view over it."""

from __future__ import annotations

import dataclasses
import os
import socket
import sqlite3
import subprocess
import sys

import pytest

from collm_nas.core import ACTIVE, FINISHED, INTERRUPTED, Objective, Trial
from collm_nas.storage import RunHistory
from collm_nas.storage import SQLiteTrialStore as TrialStore
from collm_nas.testing import StoreContract


@pytest.fixture()
def store(tmp_path):
    s = TrialStore(tmp_path / "sub" / "trials.sqlite")  # parent folders are created
    yield s
    s.close()


def result(code: str, value: float | None = None, status: str = "ok", error: str | None = None) -> Trial:
    metrics = {"acc": value} if value is not None else {}
    return Trial(code, f"arch-{code}", metrics=metrics, cost={"s": 0.1}, status=status, error=error)


def add(store: TrialStore, run_id: str, code: str, value: float | None, round_no: int = 1) -> bool:
    status = "ok" if value is not None else "failed"
    trial = result(code, value, status, None if value is not None else "boom")
    return store.add_trial(run_id, trial.recorded(round=round_no, value=value))


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ============================================================ the store contract
class TestSQLiteStore(StoreContract):
    def make_store(self, tmp_path):
        return TrialStore(tmp_path / "sub" / "trials.sqlite")  # parent folders are created


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
    history = RunHistory(store, "r1", Objective("value", "max"))
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
    history = RunHistory(store, "r1", Objective("value", mode))
    assert history.best() is None
    add(store, "r1", "000000", None)  # failed trials never win
    history.refresh()
    assert history.best() is None
    for code, value in [("333132", 80.0), ("000300", 60.0), ("111111", 95.0), ("222222", 70.0)]:
        add(store, "r1", code, value)
        history.refresh()  # one at a time: the best is kept incrementally
    assert (history.best().ncode, history.best().value) == (best_code, best_value)
    fresh = RunHistory(store, "r1", Objective("value", mode))  # all at once
    assert (fresh.best().ncode, fresh.best().value) == (best_code, best_value)


def test_run_history_ties_keep_the_first(store):
    store.create_run("r1", {})
    add(store, "r1", "333132", 90.0)
    add(store, "r1", "000300", 90.0)
    assert RunHistory(store, "r1").best().ncode == "333132"
    assert RunHistory(store, "r1", Objective("value", "min")).best().ncode == "333132"
