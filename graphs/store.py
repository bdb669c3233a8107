"""The trial store: every run, trial and round figure, in SQLite.

Trials are keyed by (run id, NCode); writing a trial twice is a no-op, so a
node re-run after a crash can never record or evaluate an architecture
twice. The graph's checkpoints hold only a small summary; everything that
grows with the search lives here.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collm_nas.agents.roles import Trial
from collm_nas.evaluators.base import TrialResult

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id      TEXT PRIMARY KEY,
    status      TEXT NOT NULL,
    config      TEXT NOT NULL,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL,
    stop_reason TEXT,
    best_ncode  TEXT,
    best_value  REAL,
    n_trials    INTEGER NOT NULL DEFAULT 0,
    pid         INTEGER,
    host        TEXT
);
CREATE TABLE IF NOT EXISTS trials (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id      TEXT NOT NULL REFERENCES runs(run_id),
    ncode       TEXT NOT NULL,
    arch        TEXT NOT NULL,
    round       INTEGER NOT NULL,
    status      TEXT NOT NULL,
    value       REAL,
    metrics     TEXT NOT NULL,
    cost        TEXT NOT NULL,
    error       TEXT,
    created_at  REAL NOT NULL,
    UNIQUE (run_id, ncode)
);
CREATE INDEX IF NOT EXISTS trials_by_run ON trials(run_id, seq);
CREATE TABLE IF NOT EXISTS rounds (
    run_id      TEXT NOT NULL REFERENCES runs(run_id),
    round       INTEGER NOT NULL,
    figures     TEXT NOT NULL,
    created_at  REAL NOT NULL,
    PRIMARY KEY (run_id, round)
);
"""

ACTIVE = "running"
FINISHED = "finished"
INTERRUPTED = "interrupted"
FAILED = "failed"


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    status: str
    config: dict[str, Any]
    created_at: float
    updated_at: float
    stop_reason: str | None
    best_ncode: str | None
    best_value: float | None
    n_trials: int
    pid: int | None
    host: str | None

    @property
    def process_alive(self) -> bool:
        """Whether the process that last ran this run still lives (same host only)."""
        if self.status != ACTIVE or not self.pid or self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    @property
    def display_status(self) -> str:
        """``running`` only while its process lives; a dead one shows as resumable."""
        if self.status == ACTIVE and self.host == socket.gethostname() and not self.process_alive:
            return "stopped (resumable)"
        if self.status == INTERRUPTED:
            return "interrupted (resumable)"
        return self.status


def _trial(row: sqlite3.Row) -> Trial:
    return Trial(
        seq=row["seq"],
        ncode=row["ncode"],
        arch=row["arch"],
        round=row["round"],
        status=row["status"],
        value=row["value"],
        metrics=json.loads(row["metrics"]),
        cost=json.loads(row["cost"]),
        error=row["error"],
        created_at=row["created_at"],
    )


class TrialStore:
    """SQLite-backed runs, trials and rounds (safe to share between threads)."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._conn.row_factory = sqlite3.Row
        self._lock = threading.RLock()
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, args).fetchall()

    # ------------------------------------------------------------------ runs
    def create_run(self, run_id: str, config: dict[str, Any]) -> None:
        now = time.time()
        with self._tx() as c:
            c.execute(
                "INSERT INTO runs (run_id, status, config, created_at, updated_at, pid, host)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (run_id, ACTIVE, json.dumps(config, sort_keys=True), now, now, os.getpid(), socket.gethostname()),
            )

    def get_run(self, run_id: str) -> RunInfo | None:
        rows = self._query("SELECT * FROM runs WHERE run_id = ?", (run_id,))
        return self._run(rows[0]) if rows else None

    def list_runs(self) -> list[RunInfo]:
        return [self._run(r) for r in self._query("SELECT * FROM runs ORDER BY created_at")]

    @staticmethod
    def _run(row: sqlite3.Row) -> RunInfo:
        return RunInfo(
            run_id=row["run_id"],
            status=row["status"],
            config=json.loads(row["config"]),
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            stop_reason=row["stop_reason"],
            best_ncode=row["best_ncode"],
            best_value=row["best_value"],
            n_trials=row["n_trials"],
            pid=row["pid"],
            host=row["host"],
        )

    def set_status(self, run_id: str, status: str, stop_reason: str | None = None) -> None:
        with self._tx() as c:
            c.execute(
                "UPDATE runs SET status = ?, stop_reason = COALESCE(?, stop_reason), updated_at = ?,"
                " pid = ?, host = ? WHERE run_id = ?",
                (status, stop_reason, time.time(), os.getpid(), socket.gethostname(), run_id),
            )

    def update_summary(self, run_id: str, best_ncode: str | None, best_value: float | None) -> None:
        with self._tx() as c:
            c.execute(
                "UPDATE runs SET best_ncode = ?, best_value = ?, updated_at = ?,"
                " n_trials = (SELECT COUNT(*) FROM trials WHERE run_id = ?) WHERE run_id = ?",
                (best_ncode, best_value, time.time(), run_id, run_id),
            )

    # ---------------------------------------------------------------- trials
    def add_trial(self, run_id: str, result: TrialResult, round_no: int, value: float | None) -> bool:
        """Record one evaluation; returns False when (run, NCode) was already recorded."""
        with self._tx() as c:
            cur = c.execute(
                "INSERT OR IGNORE INTO trials (run_id, ncode, arch, round, status, value, metrics, cost,"
                " error, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run_id,
                    result.ncode,
                    result.arch,
                    round_no,
                    result.status,
                    value,
                    json.dumps(result.metrics),
                    json.dumps(result.cost),
                    result.error,
                    time.time(),
                ),
            )
            return cur.rowcount == 1

    def trials(self, run_id: str, after_seq: int = 0) -> list[Trial]:
        rows = self._query("SELECT * FROM trials WHERE run_id = ? AND seq > ? ORDER BY seq", (run_id, after_seq))
        return [_trial(r) for r in rows]

    def recorded(self, run_id: str, ncodes: Sequence[str]) -> set[str]:
        if not ncodes:
            return set()
        marks = ",".join("?" * len(ncodes))
        rows = self._query(f"SELECT ncode FROM trials WHERE run_id = ? AND ncode IN ({marks})", (run_id, *ncodes))
        return {r["ncode"] for r in rows}

    def count_trials(self, run_id: str) -> int:
        return self._query("SELECT COUNT(*) AS n FROM trials WHERE run_id = ?", (run_id,))[0]["n"]

    # ---------------------------------------------------------------- rounds
    def add_round(self, run_id: str, round_no: int, figures: dict[str, Any]) -> None:
        with self._tx() as c:
            c.execute(
                "INSERT OR REPLACE INTO rounds (run_id, round, figures, created_at) VALUES (?, ?, ?, ?)",
                (run_id, round_no, json.dumps(figures), time.time()),
            )

    def rounds(self, run_id: str) -> list[dict[str, Any]]:
        rows = self._query("SELECT round, figures FROM rounds WHERE run_id = ? ORDER BY round", (run_id,))
        return [{"round": r["round"], **json.loads(r["figures"])} for r in rows]


class RunHistory:
    """A run's trials as the strategies see them, refreshed incrementally from the store."""

    def __init__(self, store: TrialStore, run_id: str, mode: str = "max") -> None:
        self.store = store
        self.run_id = run_id
        self.mode = mode
        self._trials: list[Trial] = []
        self._by_code: dict[str, Trial] = {}
        self._by_round: dict[int, list[Trial]] = {}
        self._best: Trial | None = None
        self._last_seq = 0
        self.refresh()

    def refresh(self) -> "RunHistory":
        for t in self.store.trials(self.run_id, after_seq=self._last_seq):
            self._trials.append(t)
            self._by_code[t.ncode] = t
            self._by_round.setdefault(t.round, []).append(t)
            self._last_seq = t.seq
            if t.ok and (
                self._best is None
                or (t.value > self._best.value if self.mode == "max" else t.value < self._best.value)
            ):
                self._best = t
        return self

    def trials(self) -> Sequence[Trial]:
        return self._trials

    def __contains__(self, ncode: object) -> bool:
        return ncode in self._by_code

    def __len__(self) -> int:
        return len(self._trials)

    def get(self, ncode: str) -> Trial | None:
        return self._by_code.get(ncode)

    def best(self) -> Trial | None:
        return self._best

    def in_round(self, round_no: int) -> list[Trial]:
        return list(self._by_round.get(round_no, ()))
