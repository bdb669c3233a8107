"""The PostgreSQL trial store and checkpointer (the ``postgres`` extra: psycopg 3, langgraph-checkpoint-postgres).

Runs, trials and rounds go in the tables of :mod:`collm_nas.storage.sql`
(same SQL, same semantics); the LangGraph checkpoints go in
langgraph-checkpoint-postgres's tables, in the same database. psycopg is
imported only when a ``postgres://`` store is opened, so SQLite users need
none of it.

One writer per run: a process that claims a run holds a session-level
advisory lock keyed by the run id until it stops being the writer; the
server drops the lock the moment the holder's connection ends (the process
is killed, or its machine is gone: TCP keepalives are set on the session),
so whether a run is held is known on every machine without waiting for a
timeout.

A lost connection (the server restarted, a failover, an administrator ended
the session, the network dropped) is retried: the store reconnects with
exponential backoff (:class:`Reconnect`: 6 attempts within about 10 s by
default), takes its runs' locks again (refusing in one line if another
process took a run meanwhile) and runs the whole operation again; every
write is idempotent, so a re-run can neither lose nor double a trial. The
checkpointer draws its connections from a pool that checks them before use,
and retries its writes and reads the same way. When the server stays away,
the operation fails in one line naming the store (password masked) and
saying how to go on: the run is resumable.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from collm_nas.core import PruneReport, UserError
from collm_nas.storage.locator import mask_url, scrub
from collm_nas.storage.sql import POSTGRES, BaseTrialStore

EXTRA_HINT = "pip install 'collm-nas[postgres]' (psycopg 3 and langgraph-checkpoint-postgres)"
# The advisory lock of a run: 64 bits of md5('collm-nas:' || run_id), computed by the server.
_KEY = "('x' || substr(md5('collm-nas:' || {}), 1, 16))::bit(64)::bigint"
RUN_LOCK_KEY = _KEY.format("%s::text")
# One lock serialises schema creation and checkpointer migrations between processes starting at once.
SCHEMA_LOCK = 0x636F6C6C6D6E6173  # "collmnas"
# Whether a live session holds the run's lock (pg_locks shows a bigint key as classid:objid, objsubid 1).
_HELD = (
    "EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1"
    " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    f" AND l.classid::bigint = ({_KEY.format('runs.run_id')} >> 32) & 4294967295"
    f" AND l.objid::bigint = {_KEY.format('runs.run_id')} & 4294967295)"
)
_checkpointer_ready: set[str] = set()
_ready_lock = threading.Lock()
# Server-side reasons that mean the session is gone (57P01 terminated by an administrator, 57P02 crash,
# 57P03 cannot connect now); class 08 is "connection exception".
_LOST_STATES = {"57P01", "57P02", "57P03"}
# The pool reports connections it drops or cannot make as warnings; the retries below say what matters.
logging.getLogger("psycopg.pool").addHandler(logging.NullHandler())
T = TypeVar("T")


@dataclass(frozen=True)
class Reconnect:
    """How a lost connection is retried: up to ``attempts`` tries within ``within_s`` seconds of the loss,
    the first at once, then after ``first_wait_s``, doubling (0.25, 0.5, 1, 2, 4 s by default).

    The defaults can be changed with ``COLLM_NAS_PG_RECONNECT_ATTEMPTS`` and
    ``COLLM_NAS_PG_RECONNECT_WITHIN_S``.
    """

    attempts: int = 6
    within_s: float = 10.0
    first_wait_s: float = 0.25

    @classmethod
    def from_env(cls) -> "Reconnect":
        try:
            attempts = int(os.environ.get("COLLM_NAS_PG_RECONNECT_ATTEMPTS", cls.attempts))
            within_s = float(os.environ.get("COLLM_NAS_PG_RECONNECT_WITHIN_S", cls.within_s))
        except ValueError:
            raise UserError("COLLM_NAS_PG_RECONNECT_ATTEMPTS must be a whole number and "
                            "COLLM_NAS_PG_RECONNECT_WITHIN_S a number of seconds") from None
        return cls(max(1, attempts), max(0.0, within_s))

    def wait_before(self, attempt: int) -> float:
        """Seconds to wait before reconnect attempt ``attempt`` (0-based)."""
        return 0.0 if attempt == 0 else self.first_wait_s * 2 ** (attempt - 1)


class _GaveUp(Exception):
    """The connection stayed lost through every retry (the caller words the message)."""

    def __init__(self, error: BaseException, attempts: int, seconds: float) -> None:
        super().__init__(str(error))
        self.error, self.attempts, self.seconds = error, attempts, seconds


def _retrying(op: Callable[[], T], policy: Reconnect, lost: Callable[[BaseException], bool],
              recover: Callable[[], None] = lambda: None) -> T:
    """``op()``; when it fails with a lost connection: wait, ``recover()`` (reconnect), run ``op`` again,
    within the policy's bounds (all of them for this one call), then :class:`_GaveUp`.

    Errors that are no lost connection pass as they are; so do ``recover``'s own (a refusal).
    """
    psycopg = _psycopg()
    started: float | None = None
    tried = 0
    while True:
        try:
            return op()
        except (psycopg.OperationalError, psycopg.InterfaceError) as e:
            if not lost(e):
                raise
            last: BaseException = e
        if started is None:
            started = time.monotonic()
        while True:
            left = policy.within_s - (time.monotonic() - started)
            if tried >= policy.attempts or left <= 0:
                raise _GaveUp(last, tried, time.monotonic() - started) from None
            time.sleep(max(0.0, min(policy.wait_before(tried), left)))
            tried += 1
            try:
                recover()
                break
            except (psycopg.OperationalError, psycopg.InterfaceError) as e:
                last = e


def lost_connection(error: BaseException) -> bool:
    """Whether a psycopg error means the session is gone (rather than a failing statement)."""
    psycopg = _psycopg()
    if isinstance(error, psycopg.InterfaceError):
        return True  # "the connection is closed" and the like
    if not isinstance(error, psycopg.OperationalError):
        return False
    state = getattr(error, "sqlstate", None)
    return state is None or state.startswith("08") or state in _LOST_STATES


def _gave_up_message(location: str, url: str, what: str, run_id: str | None, gave_up: _GaveUp,
                     reason: str | None = None) -> str:
    tries = f"{gave_up.attempts} {'retry' if gave_up.attempts == 1 else 'retries'}"
    return (f"lost the connection to the PostgreSQL store {location} and could not get it back "
            f"({tries} in {gave_up.seconds:.0f} s; last error: {reason or _reason(gave_up.error, url)}) "
            f"while trying to {what}{f' (run {run_id!r})' if run_id else ''}; nothing recorded is lost: once the "
            f"server is back, go on with 'collm-nas resume {run_id or 'RUN'}'")


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise UserError(f"a PostgreSQL store needs the 'postgres' extra: {EXTRA_HINT}") from None
    if importlib.util.find_spec("langgraph.checkpoint.postgres") is None:
        raise UserError(f"a PostgreSQL store needs the 'postgres' extra (its checkpointer is missing): {EXTRA_HINT}")
    return psycopg


def _reason(error: BaseException, url: str) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return scrub(text, url)


def _options(url: str, options: dict[str, Any]) -> dict[str, Any]:
    """Connection options: a connect timeout unless the URL sets one; a bad URL is a one-line UserError."""
    psycopg = _psycopg()
    try:
        from psycopg.conninfo import conninfo_to_dict

        given = conninfo_to_dict(url)
    except psycopg.Error as e:
        raise UserError(f"bad PostgreSQL store URL '{mask_url(url)}': {_reason(e, url)}; write it as "
                        "postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE") from None
    if "connect_timeout" not in given:
        options.setdefault("connect_timeout", 10)
    return options


def _open(url: str, **options: Any) -> Any:
    """A psycopg connection (autocommit, rows as dicts); psycopg's errors pass."""
    psycopg = _psycopg()
    from psycopg.rows import dict_row

    conn = psycopg.connect(url, autocommit=True, row_factory=dict_row, **options)
    try:  # the server notices a vanished client machine within about a minute (and drops its run locks)
        conn.execute("SET tcp_keepalives_idle = 30; SET tcp_keepalives_interval = 10; SET tcp_keepalives_count = 3")
    except psycopg.Error:
        if conn.broken:
            conn.close()
            raise
    return conn


def connect(url: str, **options: Any) -> Any:
    """A psycopg connection (autocommit, rows as dicts) or a one-line UserError with the URL masked."""
    psycopg = _psycopg()
    options = _options(url, options)
    try:
        return _open(url, **options)
    except psycopg.Error as e:
        raise UserError(f"cannot open the PostgreSQL store {mask_url(url)}: {_reason(e, url)}; check --store or "
                        "COLLM_NAS_STORE (user, password, host, port, database) and that the server is running"
                        ) from None


class PostgresTrialStore(BaseTrialStore):
    """Runs, trials and rounds in PostgreSQL: one connection per store, shared between threads.

    A lost connection is opened again and the operation re-run, as ``reconnect`` says (default:
    :meth:`Reconnect.from_env`).
    """

    dialect = POSTGRES

    def __init__(self, url: str, reconnect: Reconnect | None = None) -> None:
        self._url = url
        self._psycopg = _psycopg()
        self._policy = reconnect or Reconnect.from_env()
        self._conn = connect(url)
        self._lock = threading.RLock()
        self._held: set[str] = set()  # runs whose writer's lock this session holds
        self._lost: dict[str, str] = {}  # runs another process took while the connection was lost: the refusal
        with self._errors(), self._lock:
            try:
                present = self._conn.execute("SELECT to_regclass('runs') IS NOT NULL AND to_regclass('trials') IS NOT"
                                             " NULL AND to_regclass('rounds') IS NOT NULL AND to_regclass('run_notes')"
                                             " IS NOT NULL AS ok").fetchone()["ok"]
                if not present:  # (an admin may have made them: then no CREATE privilege is needed)
                    with self._conn.transaction():
                        self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
                        for statement in self.dialect.statements():
                            self._conn.execute(statement)
            except (self._psycopg.OperationalError, self._psycopg.InterfaceError):
                raise
            except self._psycopg.Error as e:
                self._conn.close()
                raise UserError(f"cannot set up the trial store's tables in {self.location}: {_reason(e, url)}; "
                                "the user needs CREATE on the schema (or an administrator creates the tables "
                                "once by running any collm-nas command)") from None

    @property
    def location(self) -> str:
        return mask_url(self._url)

    def close(self) -> None:
        with self._lock:
            self._held.clear()  # the server drops the session's locks with it
            self._conn.close()

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """A lost or failing server as one line (URL masked); constraint errors pass as they are."""
        psycopg = self._psycopg
        try:
            yield
        except (psycopg.OperationalError, psycopg.InterfaceError) as e:
            raise UserError(f"the PostgreSQL store {self.location} failed: {_reason(e, self._url)}") from None

    # ------------------------------------------------------- lost connections
    def _lost_connection(self, error: BaseException) -> bool:
        return self._conn.closed or self._conn.broken or lost_connection(error)

    def _resilient(self, op: Callable[[Any], T], what: str, run_id: str | None) -> T:
        """``op(connection)``, again on a new connection after a lost one; one-line errors."""
        with self._lock:
            try:
                with self._errors():  # (what passes the retries: a failing statement, not a lost session)
                    # A connection known to be lost already fails at once here, and is opened again.
                    return _retrying(lambda: op(self._conn), self._policy, self._lost_connection, self._reconnect)
            except _GaveUp as gave_up:
                run = run_id or (next(iter(sorted(self._held))) if len(self._held) == 1 else None)
                raise UserError(_gave_up_message(self.location, self._url, what, run, gave_up)) from None

    def _reconnect(self) -> None:
        """A new session in place of the lost one, holding the lost one's run locks again (or refusing)."""
        try:
            self._conn.close()
        except Exception:  # noqa: BLE001  (it is gone either way)
            pass
        left = max(2, int(self._policy.within_s))
        self._conn = _open(self._url, **_options(self._url, {"connect_timeout": min(10, left)}))
        me, host = os.getpid(), socket.gethostname()
        for run_id in sorted(self._held):
            got = self._conn.execute(f"SELECT pg_try_advisory_lock({RUN_LOCK_KEY}) AS got", (run_id,)
                                     ).fetchone()["got"]
            row = self._conn.execute("SELECT status, pid, host FROM runs WHERE run_id = %s", (run_id,)).fetchone()
            ours = row is None or (row["pid"], row["host"]) == (me, host)
            if got and ours:
                continue
            # Another process took the run while this one was cut off: this one is its writer no more.
            if got:
                self._conn.execute(f"SELECT pg_advisory_unlock({RUN_LOCK_KEY})", (run_id,))
            self._held.discard(run_id)
            by = f"process {row['pid']} on {row['host']}" if not ours else "another process"
            message = (f"run '{run_id}' was taken over by {by} while this process's connection to the PostgreSQL "
                       f"store {self.location} was lost; only one process may run, resume or approve a run at a "
                       "time: this one stops (see 'collm-nas runs')")
            self._lost[run_id] = message
            raise UserError(message)

    # ------------------------------------------------------------ the hooks
    def _transaction(self, work: Callable[[Any], T], what: str = "write to the store",
                     run_id: str | None = None) -> T:
        def op(conn: Any) -> T:
            with conn.transaction():
                return work(conn)

        return self._resilient(op, what, run_id)

    def _query(self, sql: str, args: Sequence[Any] = (), what: str = "read the store",
               run_id: str | None = None) -> list[Any]:
        return self._resilient(lambda conn: conn.execute(sql, args).fetchall(), what, run_id)

    def claim(self, run_id: str, seen: float | None = None) -> None:
        super().claim(run_id, seen)
        self._lost.pop(run_id, None)

    def set_status(self, run_id: str, status: str, stop_reason: str | None = None) -> None:
        if run_id in self._lost:  # another process writes the run now: its status is not this one's to set
            raise UserError(self._lost[run_id])
        super().set_status(run_id, status, stop_reason)

    def _select_runs(self) -> str:
        return f"SELECT runs.*, {_HELD} AS held FROM runs"

    def _take(self, c: Any, run_id: str, row: Any) -> bool:
        if run_id in self._held:
            return False  # this process is the writer already (e.g. search, then its first drive)
        if not c.execute(f"SELECT pg_try_advisory_lock({RUN_LOCK_KEY}) AS got", (run_id,)).fetchone()["got"]:
            self._refuse(run_id, row)
        self._held.add(run_id)
        return True

    def release(self, run_id: str) -> None:
        with self._lock:
            if run_id not in self._held:
                return
            self._held.discard(run_id)
            try:
                self._conn.execute(f"SELECT pg_advisory_unlock({RUN_LOCK_KEY})", (run_id,))
            except self._psycopg.Error:
                pass  # the connection is gone, and the lock with it

    def prune_checkpoints(self, run_id: str, keep_recent: int) -> PruneReport:
        from collm_nas.storage.pruning import prune_postgres

        return self._transaction(lambda c: prune_postgres(c, run_id, keep_recent), "prune the run's checkpoints",
                                 run_id)


def _migrated(conn: Any, latest: int) -> bool:
    """Whether the checkpoint tables are there and up to date (then no CREATE privilege is needed)."""
    try:
        if conn.execute("SELECT to_regclass('checkpoint_migrations') IS NOT NULL AS ok").fetchone()["ok"]:
            return conn.execute("SELECT max(v) AS v FROM checkpoint_migrations").fetchone()["v"] == latest
    except _psycopg().Error:
        pass  # not readable: setup() says why
    return False


@functools.lru_cache(maxsize=None)
def _retrying_saver_class() -> type:
    """PostgresSaver whose writes and reads are retried on a lost connection (made when first needed:
    langgraph-checkpoint-postgres is imported only for a PostgreSQL store)."""
    from langgraph.checkpoint.postgres import PostgresSaver

    class RetryingPostgresSaver(PostgresSaver):
        """put / put_writes / get_tuple run again after a lost connection (the pool hands out a checked,
        new one): they are idempotent upserts and a read; when the server stays away, a one-line UserError."""

        def __init__(self, conn: Any, url: str, reconnect: Reconnect) -> None:
            super().__init__(conn)
            self._url = url
            self._policy = reconnect

        def _retry(self, what: str, config: Any, op: Callable[[], T]) -> T:
            try:
                return _retrying(op, self._policy, lost_connection)
            except _GaveUp as gave_up:
                raise UserError(_gave_up_message(mask_url(self._url), self._url, what,
                                                 config.get("configurable", {}).get("thread_id"), gave_up,
                                                 self._why(gave_up.error))) from None

        def _why(self, error: BaseException) -> str:
            """Why the server is away: the pool only says it had no connection in time, a connection says why."""
            from psycopg_pool import PoolTimeout

            if isinstance(error, PoolTimeout):
                try:
                    _open(self._url, **_options(self._url, {"connect_timeout": 2})).close()
                except _psycopg().Error as e:
                    error = e
            return _reason(error, self._url)

        def put(self, config: Any, checkpoint: Any, metadata: Any, new_versions: Any) -> Any:
            return self._retry("save a checkpoint", config,
                               lambda: super(RetryingPostgresSaver, self).put(config, checkpoint, metadata,
                                                                              new_versions))

        def put_writes(self, config: Any, writes: Any, task_id: str, task_path: str = "") -> None:
            return self._retry("save a step's writes", config,
                               lambda: super(RetryingPostgresSaver, self).put_writes(config, writes, task_id,
                                                                                     task_path))

        def get_tuple(self, config: Any) -> Any:
            return self._retry("read a checkpoint", config,
                               lambda: super(RetryingPostgresSaver, self).get_tuple(config))

    return RetryingPostgresSaver


@contextmanager
def postgres_checkpointer(url: str, reconnect: Reconnect | None = None) -> Iterator[Any]:
    """LangGraph's PostgresSaver on the store's database, on a pool of checked connections, retrying a lost
    connection as ``reconnect`` says; its tables are set up once per process."""
    try:
        from langgraph.checkpoint.postgres import PostgresSaver
        from psycopg_pool import ConnectionPool
    except ImportError:
        raise UserError(f"a PostgreSQL store needs the 'postgres' extra: {EXTRA_HINT}") from None
    psycopg = _psycopg()
    from psycopg.rows import dict_row

    policy = reconnect or Reconnect.from_env()
    conn = connect(url, prepare_threshold=0)  # (says in one line why the store cannot be opened)
    try:
        with _ready_lock:
            if url not in _checkpointer_ready and not _migrated(conn, len(PostgresSaver.MIGRATIONS) - 1):
                # Migrations of processes starting together must not interleave (they insert version rows).
                conn.execute("SELECT pg_advisory_lock(%s)", (SCHEMA_LOCK,))
                try:
                    PostgresSaver(conn).setup()
                except psycopg.Error as e:
                    raise UserError(f"cannot set up the checkpoint tables in {mask_url(url)}: {_reason(e, url)}; "
                                    "the user needs CREATE on the schema") from None
                finally:
                    conn.execute("SELECT pg_advisory_unlock(%s)", (SCHEMA_LOCK,))
                _checkpointer_ready.add(url)
    finally:
        conn.close()
    # The saver takes one connection at a time (it holds a lock while using it): a small pool, whose
    # check replaces a connection the server dropped before it is used; waiting for one is bounded so that
    # a server that stays away is reported within the retries' time.
    kwargs = _options(url, {"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row})
    pool = ConnectionPool(url, min_size=1, max_size=2, kwargs=kwargs, check=ConnectionPool.check_connection,
                          timeout=max(1.0, policy.within_s / max(1, policy.attempts)), open=False,
                          name="collm-nas-checkpoints")
    try:
        try:
            pool.open(wait=True, timeout=max(10.0, policy.within_s))
        except psycopg.Error as e:
            raise UserError(f"cannot open the PostgreSQL store {mask_url(url)}: {_reason(e, url)}; check that "
                            "the server is running") from None
        yield _retrying_saver_class()(pool, url, policy)
    finally:
        pool.close()
