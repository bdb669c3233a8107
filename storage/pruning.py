"""Pruning a run's LangGraph checkpoints (the open-source savers implement no ``prune``).

A run writes about five checkpoints a round; after a while only two kinds are
worth keeping:

* the last checkpoint of every round (``history`` lists them, ``fork`` starts
  from them): the newest checkpoint whose ``round`` channel holds that round;
* the ``keep_recent`` most recent checkpoints, with their pending writes (a
  resume starts from the latest one and needs its writes).

Everything else goes: older checkpoints, the pending writes of all but the
recent ones, and (PostgreSQL) channel blobs no kept checkpoint refers to.
Each pass remembers how far it decided (``checkpoint_marks``), so the next
pass reads only newer checkpoints and pruning stays cheap in a long search:
below the mark only round ends survive, and since the ``round`` channel never
decreases along a thread, no later checkpoint can belong to their rounds.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from collm_nas.core import PruneReport

MARKS_SQL = ("CREATE TABLE IF NOT EXISTS checkpoint_marks (run_id TEXT PRIMARY KEY, upto TEXT NOT NULL)")


def choose(rows: Iterable[tuple[str, int | None]], keep_recent: int) -> tuple[set[str], set[str], int]:
    """From ``(checkpoint_id, round)`` newest first: (kept ids, the recent ones among them, rounds kept)."""
    keep: set[str] = set()
    recent: set[str] = set()
    rounds: set[int] = set()
    for i, (checkpoint_id, round_no) in enumerate(rows):
        if i < keep_recent:
            keep.add(checkpoint_id)
            recent.add(checkpoint_id)
        if round_no is not None and round_no not in rounds:
            rounds.add(round_no)
            keep.add(checkpoint_id)
    return keep, recent, len(rounds)


def _round_of(values: Any) -> int | None:
    value = values.get("round") if isinstance(values, dict) else None
    return value if isinstance(value, int) else None


def prune_sqlite(conn: Any, run_id: str, keep_recent: int) -> PruneReport:
    """Prune one run's checkpoints in a SQLite database (``conn``: an open sqlite3 connection, in a transaction)."""
    from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

    has = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()}
    if "checkpoints" not in has:
        return PruneReport(run_id, 0, 0)
    conn.execute(MARKS_SQL)
    mark = conn.execute("SELECT upto FROM checkpoint_marks WHERE run_id = ?", (run_id,)).fetchone()
    upto = mark[0] if mark else ""
    serde = JsonPlusSerializer()
    rows = conn.execute(
        "SELECT checkpoint_id, type, checkpoint FROM checkpoints WHERE thread_id = ? AND checkpoint_ns = '' "
        "AND checkpoint_id > ? ORDER BY checkpoint_id DESC", (run_id, upto)).fetchall()
    decided = []
    for checkpoint_id, kind, blob in rows:
        values = serde.loads_typed((kind, blob)).get("channel_values", {})
        decided.append((checkpoint_id, _round_of(values)))
    keep, recent, rounds_kept = choose(decided, keep_recent)
    drop = [cid for cid, _ in decided if cid not in keep]
    conn.executemany("DELETE FROM checkpoints WHERE thread_id = ? AND checkpoint_ns = '' AND checkpoint_id = ?",
                     [(run_id, cid) for cid in drop])
    keep_writes = sorted(recent)
    marks = ",".join("?" * len(keep_writes)) or "''"
    cur = conn.execute(
        f"DELETE FROM writes WHERE thread_id = ? AND checkpoint_ns = '' AND checkpoint_id NOT IN ({marks})",
        (run_id, *keep_writes))
    writes_deleted = cur.rowcount
    if recent:
        new_upto = _before(min(recent), decided)
        _pack(conn, run_id, sorted(cid for cid in keep if upto < cid <= new_upto))
        conn.execute("INSERT INTO checkpoint_marks (run_id, upto) VALUES (?, ?) ON CONFLICT (run_id) DO UPDATE "
                     "SET upto = excluded.upto", (run_id, new_upto))
    total = conn.execute("SELECT COUNT(*) FROM checkpoints WHERE thread_id = ?", (run_id,)).fetchone()[0]
    # Below the mark every checkpoint left is the end of a round no later checkpoint has.
    rounds_kept += conn.execute("SELECT COUNT(*) FROM checkpoints WHERE thread_id = ? AND checkpoint_ns = '' "
                                "AND checkpoint_id <= ?", (run_id, upto)).fetchone()[0] if upto else 0
    return PruneReport(run_id, kept=total, deleted=len(drop), rounds_kept=rounds_kept,
                       details={"writes_deleted": writes_deleted})


def _pack(conn: Any, run_id: str, checkpoint_ids: list[str]) -> None:
    """Write the given checkpoints again, at the end of the table (SQLite).

    Deleting four checkpoints of every five leaves each page of the table
    holding a single survivor: the file would keep a page per kept
    checkpoint. The survivors below the mark never change again, so they are
    moved together, and their old pages empty out for new checkpoints.
    """
    if not checkpoint_ids:
        return
    marks = ",".join("?" * len(checkpoint_ids))
    where = f"thread_id = ? AND checkpoint_ns = '' AND checkpoint_id IN ({marks})"
    rows = conn.execute(f"SELECT {_COLUMNS} FROM checkpoints WHERE {where} ORDER BY checkpoint_id",
                        (run_id, *checkpoint_ids)).fetchall()
    conn.execute(f"DELETE FROM checkpoints WHERE {where}", (run_id, *checkpoint_ids))
    conn.executemany(f"INSERT INTO checkpoints ({_COLUMNS}) VALUES ({_SLOTS})", rows)


# LangGraph's SqliteSaver table, column by column.
_COLUMNS = "thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, type, checkpoint, metadata"
_SLOTS = ", ".join("?" for _ in _COLUMNS.split(","))


def _before(checkpoint_id: str, decided: list[tuple[str, int | None]]) -> str:
    """The newest id older than ``checkpoint_id`` among ``decided`` (the next pass reads from there on)."""
    older = [cid for cid, _ in decided if cid < checkpoint_id]
    return max(older) if older else ""


def _create_marks(conn: Any) -> bool:
    """Create ``checkpoint_marks`` (PostgreSQL); False when this user may not (then every pass reads all
    of the run's checkpoints: slower, the same result). ``CREATE TABLE IF NOT EXISTS`` needs the CREATE
    privilege even when the table is there, so it runs only when the table is missing."""
    import psycopg

    try:
        with conn.transaction():  # a savepoint: a refusal leaves the pruning transaction usable
            conn.execute(MARKS_SQL)
        return True
    except psycopg.errors.InsufficientPrivilege:
        return False


def _delete_orphan_blobs(conn: Any, run_id: str, candidates: set[tuple[str, str]]) -> int:
    """Delete the channel blobs the just-deleted checkpoints referred to and no remaining one does.

    Only those blobs can have become orphans, and the remaining checkpoints (the round ends and the
    recent ones: a few hundred in a long search) are read once, so a pass costs what it deletes and
    keeps, not blobs x checkpoints. (A blob's version is unique to the write that made it, so this
    holds on threads that branched, too.)
    """
    kept = conn.execute("SELECT checkpoint -> 'channel_versions' AS versions FROM checkpoints "
                        "WHERE thread_id = %s AND checkpoint_ns = ''", (run_id,)).fetchall()
    referenced = {(ch, str(v)) for r in kept for ch, v in (r["versions"] or {}).items()}
    orphans = sorted(candidates - referenced)
    if not orphans:
        return 0
    # One statement per channel, each a probe of the blobs' primary key (thread, namespace, channel, version):
    # a join against the orphan list was planned as a scan of the thread's blobs per orphan while the table's
    # statistics still said it was empty (0.5 s a pass by round 800).
    by_channel: dict[str, list[str]] = {}
    for channel, version in orphans:
        by_channel.setdefault(channel, []).append(version)
    return sum(conn.execute("DELETE FROM checkpoint_blobs WHERE thread_id = %s AND checkpoint_ns = '' "
                            "AND channel = %s AND version = ANY(%s)", (run_id, channel, versions)).rowcount
               for channel, versions in sorted(by_channel.items()))


def prune_postgres(conn: Any, run_id: str, keep_recent: int) -> PruneReport:
    """Prune one run's checkpoints in PostgreSQL (``conn``: a psycopg connection, in a transaction)."""
    exists = conn.execute("SELECT to_regclass('checkpoints') IS NOT NULL AS ok, "
                          "to_regclass('checkpoint_marks') IS NOT NULL AS marks").fetchone()
    if not exists["ok"]:
        return PruneReport(run_id, 0, 0)
    marks = exists["marks"] or _create_marks(conn)
    mark = conn.execute("SELECT upto FROM checkpoint_marks WHERE run_id = %s", (run_id,)).fetchone() if marks else None
    upto = mark["upto"] if mark else ""
    rows = conn.execute(
        "SELECT checkpoint_id, checkpoint -> 'channel_values' ->> 'round' AS round FROM checkpoints "
        "WHERE thread_id = %s AND checkpoint_ns = '' AND checkpoint_id > %s ORDER BY checkpoint_id DESC",
        (run_id, upto)).fetchall()
    decided = [(r["checkpoint_id"], int(r["round"]) if r["round"] is not None else None) for r in rows]
    keep, recent, rounds_kept = choose(decided, keep_recent)
    drop = [cid for cid, _ in decided if cid not in keep]
    dropped_versions: set[tuple[str, str]] = set()
    if drop:
        gone = conn.execute("DELETE FROM checkpoints WHERE thread_id = %s AND checkpoint_ns = '' "
                            "AND checkpoint_id = ANY(%s) RETURNING checkpoint -> 'channel_versions' AS versions",
                            (run_id, drop)).fetchall()
        dropped_versions = {(ch, str(v)) for r in gone for ch, v in (r["versions"] or {}).items()}
    writes = conn.execute("DELETE FROM checkpoint_writes WHERE thread_id = %s AND checkpoint_ns = '' "
                          "AND NOT (checkpoint_id = ANY(%s))", (run_id, sorted(recent))).rowcount
    blobs = _delete_orphan_blobs(conn, run_id, dropped_versions) if drop else 0
    if recent and marks:
        conn.execute("INSERT INTO checkpoint_marks (run_id, upto) VALUES (%s, %s) ON CONFLICT (run_id) DO UPDATE "
                     "SET upto = excluded.upto", (run_id, _before(min(recent), decided)))
    total = conn.execute("SELECT COUNT(*) AS n FROM checkpoints WHERE thread_id = %s", (run_id,)).fetchone()["n"]
    if upto:  # below the mark every checkpoint left is the end of a round no later checkpoint has
        rounds_kept += conn.execute("SELECT COUNT(*) AS n FROM checkpoints WHERE thread_id = %s AND checkpoint_ns = '' "
                                    "AND checkpoint_id <= %s", (run_id, upto)).fetchone()["n"]
    return PruneReport(run_id, kept=total, deleted=len(drop), rounds_kept=rounds_kept,
                       details={"writes_deleted": writes, "blobs_deleted": blobs})
