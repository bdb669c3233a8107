"""The trial-store interface: runs, trials and round figures, and who may write a run.

Trials are keyed by (run id, NCode): recording a trial twice is a no-op, so a
step re-run after a crash can never record or evaluate an architecture
twice. One writer per run: :meth:`TrialStore.claim` makes a process the run's
only writer, check and write in one transaction.

Implementations live in ``collm_nas.storage`` (SQLite, PostgreSQL); both pass
``collm_nas.testing.StoreContract``.
"""

from __future__ import annotations

import os
import socket
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from collm_nas.core.trial import Trial

ACTIVE = "running"
FINISHED = "finished"
INTERRUPTED = "interrupted"
FAILED = "failed"
AWAITING = "awaiting approval"  # paused at the approval gate; answer with approve, then it goes on
STATUSES = (ACTIVE, FINISHED, INTERRUPTED, FAILED, AWAITING)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
    # PostgreSQL: whether a live connection holds the run (its writer's lock); None where unknown (SQLite).
    held: bool | None = None

    @property
    def process_alive(self) -> bool:
        """Whether the process that last ran this run still lives (SQLite: same host only)."""
        if self.status != ACTIVE:
            return False
        if self.held is not None:
            return self.held
        if not self.pid or self.host != socket.gethostname():
            return False
        return pid_alive(self.pid)

    @property
    def display_status(self) -> str:
        """``running`` only while its process lives; a dead one shows as resumable."""
        if self.status == ACTIVE and not self.process_alive and (
                self.held is not None or self.host == socket.gethostname()):
            return "stopped (resumable)"
        if self.status == INTERRUPTED:
            return "interrupted (resumable)"
        return self.status


@dataclass(frozen=True)
class PruneReport:
    """What pruning a run's checkpoints did."""

    run_id: str
    kept: int
    deleted: int
    rounds_kept: int = 0
    details: dict[str, int] = field(default_factory=dict)


class TrialStore(ABC):
    """Runs, trials and round figures of any number of runs (thread-safe)."""

    @property
    @abstractmethod
    def location(self) -> str:
        """How this store is named in messages (never with a password)."""

    @abstractmethod
    def close(self) -> None: ...

    # ------------------------------------------------------------------ runs
    @abstractmethod
    def create_run(self, run_id: str, config: dict[str, Any]) -> None:
        """A new run, held by this process (its writer) from the start; an existing id is refused."""

    @abstractmethod
    def get_run(self, run_id: str) -> RunInfo | None: ...

    @abstractmethod
    def list_runs(self) -> list[RunInfo]: ...

    @abstractmethod
    def claim(self, run_id: str, seen: float | None = None) -> None:
        """Make this process the run's only writer, or refuse in one line (``UserError``)."""

    @abstractmethod
    def release(self, run_id: str) -> None:
        """This process stops being the run's writer."""

    @abstractmethod
    def set_status(self, run_id: str, status: str, stop_reason: str | None = None) -> None: ...

    @abstractmethod
    def update_summary(self, run_id: str, best_ncode: str | None, best_value: float | None) -> None: ...

    # ---------------------------------------------------------------- trials
    @abstractmethod
    def add_trial(self, run_id: str, trial: Trial) -> bool:
        """Record a trial (its ``round`` and ``value`` set); False when (run, NCode) was already recorded."""

    @abstractmethod
    def trials(self, run_id: str, after_seq: int = 0) -> list[Trial]:
        """The run's trials in evaluation order (only those after ``after_seq``)."""

    @abstractmethod
    def recorded(self, run_id: str, ncodes: Sequence[str]) -> set[str]:
        """Which of ``ncodes`` the run has recorded."""

    @abstractmethod
    def count_trials(self, run_id: str) -> int: ...

    # ---------------------------------------------------------------- rounds
    @abstractmethod
    def add_round(self, run_id: str, round_no: int, figures: dict[str, Any]) -> None:
        """Write a round's figures (a re-run round replaces them)."""

    @abstractmethod
    def rounds(self, run_id: str, after_round: int = 0) -> list[dict[str, Any]]:
        """The run's round figures in round order (only the rounds numbered above ``after_round``)."""

    # ----------------------------------------------------------------- notes
    @abstractmethod
    def set_note(self, run_id: str, key: str, value: Any) -> None:
        """Keep a small JSON value about a run under ``key`` (None deletes it): where a run is hosted, its
        open approval pause, ..."""

    @abstractmethod
    def notes(self, run_id: str) -> dict[str, Any]: ...

    # ----------------------------------------------------------- checkpoints
    @abstractmethod
    def prune_checkpoints(self, run_id: str, keep_recent: int) -> PruneReport:
        """Delete the run's old LangGraph checkpoints kept in the same database: keep the last
        checkpoint of every round and the ``keep_recent`` most recent ones."""
