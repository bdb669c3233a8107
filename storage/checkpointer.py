"""The LangGraph checkpointer on a store locator: the SQLite file or the PostgreSQL database of the trial store."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from langgraph.checkpoint.sqlite import SqliteSaver

from collm_nas.storage.locator import is_postgres


def version_number(version: str | int | None) -> int:
    """The counter inside a channel version: ours (``"c356"``), LangGraph's (``"000…0356.0.4302"``) or an int."""
    if version is None:
        return 0
    if isinstance(version, int):
        return version
    return int(version[1:]) if version[:1].isalpha() else int(version.split(".")[0])


def compact_version(number: int) -> str:
    """``number`` as a short version that sorts as numbers do: its digit count as a letter, then the digits
    (``"a7"`` < ``"b10"`` < ``"c356"``); every one sorts after LangGraph's zero-padded versions."""
    digits = str(number)
    return chr(ord("a") + len(digits) - 1) + digits


class CompactSqliteSaver(SqliteSaver):
    """SqliteSaver whose channel versions are a few characters instead of 52.

    A checkpoint names the version of every channel and what every node has
    seen; with LangGraph's versions (a 32-digit counter and a random suffix,
    which keeps versions unique for savers that store values by version) that
    was two thirds of a 3 KB checkpoint. This saver stores values inside the
    checkpoint, so the counter alone is enough. Runs written with the long
    form go on: a short version always sorts after a long one.
    """

    def get_next_version(self, current: str | int | None, channel: None) -> str:  # type: ignore[override]
        return compact_version(version_number(current) + 1)


class Checkpointer:
    """``with Checkpointer(locator) as saver:`` a LangGraph saver for the run database, closed on exit."""

    def __init__(self, locator: str | Path) -> None:
        self.postgres = is_postgres(str(locator))
        self.locator = str(locator)

    def __enter__(self) -> Any:
        if self.postgres:
            from collm_nas.storage.postgres import postgres_checkpointer

            self._pg = postgres_checkpointer(self.locator)
            return self._pg.__enter__()
        path = Path(self.locator)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(str(path), check_same_thread=False, timeout=30)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        saver = CompactSqliteSaver(self.conn)
        saver.setup()
        return saver

    def __exit__(self, *exc: object) -> None:
        if self.postgres:
            self._pg.__exit__(*exc)
            return
        self.conn.close()
