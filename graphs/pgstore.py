"""The PostgreSQL trial store and checkpointer (the ``postgres`` extra: psycopg 3, langgraph-checkpoint-postgres).

Runs, trials and rounds go in the tables of :mod:`collm_nas.graphs.store`
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
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from collm_nas.errors import UserError
from collm_nas.graphs.locator import mask_url, scrub
from collm_nas.graphs.store import POSTGRES, BaseTrialStore

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


def connect(url: str, **options: Any) -> Any:
    """A psycopg connection (autocommit, rows as dicts) or a one-line UserError with the URL masked."""
    psycopg = _psycopg()
    from psycopg.rows import dict_row

    try:
        from psycopg.conninfo import conninfo_to_dict

        given = conninfo_to_dict(url)
    except psycopg.Error as e:
        raise UserError(f"bad PostgreSQL store URL '{mask_url(url)}': {_reason(e, url)}; write it as "
                        "postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE") from None
    if "connect_timeout" not in given:
        options.setdefault("connect_timeout", 10)
    try:
        conn = psycopg.connect(url, autocommit=True, row_factory=dict_row, **options)
    except psycopg.Error as e:
        raise UserError(f"cannot open the PostgreSQL store {mask_url(url)}: {_reason(e, url)}; check --store or "
                        "COLLM_NAS_STORE (user, password, host, port, database) and that the server is running"
                        ) from None
    try:  # the server notices a vanished client machine within about a minute (and drops its run locks)
        conn.execute("SET tcp_keepalives_idle = 30; SET tcp_keepalives_interval = 10; SET tcp_keepalives_count = 3")
    except psycopg.Error:
        pass
    return conn


class PostgresTrialStore(BaseTrialStore):
    """Runs, trials and rounds in PostgreSQL: one connection per store, shared between threads."""

    dialect = POSTGRES

    def __init__(self, url: str) -> None:
        self._url = url
        self._psycopg = _psycopg()
        self._conn = connect(url)
        self._lock = threading.RLock()
        self._held: set[str] = set()  # runs whose writer's lock this session holds
        with self._errors(), self._lock:
            try:
                present = self._conn.execute("SELECT to_regclass('runs') IS NOT NULL AND to_regclass('trials') IS NOT"
                                             " NULL AND to_regclass('rounds') IS NOT NULL AS ok").fetchone()["ok"]
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

    @contextmanager
    def _tx(self) -> Iterator[Any]:
        with self._errors(), self._lock, self._conn.transaction():
            yield self._conn

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        with self._errors(), self._lock:
            return self._conn.execute(sql, args).fetchall()

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


def _migrated(conn: Any, latest: int) -> bool:
    """Whether the checkpoint tables are there and up to date (then no CREATE privilege is needed)."""
    try:
        if conn.execute("SELECT to_regclass('checkpoint_migrations') IS NOT NULL AS ok").fetchone()["ok"]:
            return conn.execute("SELECT max(v) AS v FROM checkpoint_migrations").fetchone()["v"] == latest
    except _psycopg().Error:
        pass  # not readable: setup() says why
    return False


@contextmanager
def postgres_checkpointer(url: str) -> Iterator[Any]:
    """LangGraph's PostgresSaver on the store's database; its tables are set up once per process."""
    try:
        from langgraph.checkpoint.postgres import PostgresSaver
    except ImportError:
        raise UserError(f"a PostgreSQL store needs the 'postgres' extra: {EXTRA_HINT}") from None
    psycopg = _psycopg()
    conn = connect(url, prepare_threshold=0)
    try:
        saver = PostgresSaver(conn)
        with _ready_lock:
            if url not in _checkpointer_ready and not _migrated(conn, len(PostgresSaver.MIGRATIONS) - 1):
                # Migrations of processes starting together must not interleave (they insert version rows).
                conn.execute("SELECT pg_advisory_lock(%s)", (SCHEMA_LOCK,))
                try:
                    saver.setup()
                except psycopg.Error as e:
                    raise UserError(f"cannot set up the checkpoint tables in {mask_url(url)}: {_reason(e, url)}; "
                                    "the user needs CREATE on the schema") from None
                finally:
                    conn.execute("SELECT pg_advisory_unlock(%s)", (SCHEMA_LOCK,))
                _checkpointer_ready.add(url)
        yield saver
    finally:
        conn.close()
