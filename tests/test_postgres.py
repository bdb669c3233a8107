"""PostgreSQL: trials and checkpoints in a real server (started by tests/pg_server.py), searched,
killed and resumed from other processes, listed and shown through the CLI, approved from another
process, one writer per run, and passwords that never show. The store contract (collm_nas.testing) runs here as on SQLite."""

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
from collm_nas.core.errors import UserError
from collm_nas.evaluators import Trial
from collm_nas.storage.locator import mask_url, parse_store, scrub
from collm_nas.core import ACTIVE, FINISHED, INTERRUPTED
from collm_nas.storage import RunHistory, open_trial_store
from collm_nas.testing import StoreContract


pytestmark = pytest.mark.server
ROOT = Path(__file__).resolve().parents[1]


def _env(tmp_path: Path, table_path: str, store: str | None = None, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("COLLM_NAS_STORE", None)
    env.update(COLLM_NAS_RUNS_DIR=str(tmp_path / "runs"), COLLM_NAS_NB201_TABLE=table_path,
               PYTHONPATH=str(ROOT / "tests"), XDG_CACHE_HOME=str(tmp_path / "cache"), **extra)
    if store is not None:
        env["COLLM_NAS_STORE"] = store
    return env


def _cli(args: list[str], env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "collm_nas.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def _start(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "collm_nas.cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _sql(url: str, query: str, args: tuple = ()) -> list[tuple]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(query, args)
        return cur.fetchall() if cur.description is not None else []


def _trials(url: str, run_id: str) -> dict[str, tuple]:
    rows = _sql(url, "SELECT ncode, value, metrics FROM trials WHERE run_id = %s", (run_id,))
    return {r[0]: (r[1], r[2]) for r in rows}


def _wait_for_trials(url: str, run_id: str, at_least: int, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, f"search ended before it could be stopped: {proc.communicate()}"
        try:
            if len(_trials(url, run_id)) >= at_least:
                return
        except Exception:  # the tables do not exist yet
            pass
        time.sleep(0.05)
    raise AssertionError("search made no progress")


def _one_line_error(done: subprocess.CompletedProcess) -> str:
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    return done.stderr


# ================================================================ the store contract, on PostgreSQL
class TestPostgresStore(StoreContract):
    """The contract every store passes (collm_nas.testing), on a fresh database of the real server."""

    @pytest.fixture
    def store(self, postgres_url: str):
        s = open_trial_store(postgres_url)
        yield s
        s.close()


def _result(code: str, value: float | None, round_no: int = 1, searched: float | None = None) -> Trial:
    """A trial as a run records it (its round and searched value set)."""
    if value is None:
        trial = Trial(code, f"arch-{code}", metrics={}, cost={"s": 0.1}, status="failed", error="boom")
    else:
        trial = Trial(code, f"arch-{code}", metrics={"acc": value}, cost={"s": 0.1})
    return trial.recorded(round=round_no, value=searched)


def test_run_history_reads_a_postgres_run(postgres_url: str) -> None:
    store = open_trial_store(postgres_url)
    store.create_run("r1", {})
    for i, code in enumerate(["333132", "000300", "111111", "222222"]):
        store.add_trial("r1", _result(code, float(i) if i != 2 else None, 1 + i // 2, i if i != 2 else None))
    history = RunHistory(store, "r1")
    assert len(history) == 4 and history.best().ncode == "222222"
    store.close()


def test_a_claim_in_another_session_is_refused_until_the_holder_lets_go(postgres_url: str) -> None:
    """Two stores on one database are two sessions: what two machines see."""
    first, second = open_trial_store(postgres_url), open_trial_store(postgres_url)
    first.create_run("r", {})
    assert second.get_run("r").held is True and second.get_run("r").display_status == "running"
    with pytest.raises(UserError, match=f"being run by process {os.getpid()}"):
        second.claim("r")
    first.set_status("r", INTERRUPTED)  # stops being the writer
    assert second.get_run("r").held is False
    second.claim("r")
    assert first.get_run("r").process_alive
    second.close()  # the session ends (as when its process is killed): the server frees the run at once
    deadline = time.time() + 10
    while first.get_run("r").held and time.time() < deadline:  # (its backend exits a moment later)
        time.sleep(0.01)
    info = first.get_run("r")
    assert info.status == ACTIVE and not info.process_alive and info.display_status == "stopped (resumable)"
    first.claim("r")
    first.close()


# ================================================================ searches
def test_search_on_postgres_matches_sqlite(tmp_path: Path, table_path: str, postgres_url: str) -> None:
    ws = Workspace(tmp_path / "runs", table_path=table_path, store=postgres_url)
    assert ws.location == mask_url(postgres_url) and "***" in ws.location
    with pytest.raises(UserError, match="PostgreSQL"):
        ws.db_path  # noqa: B018  (a PostgreSQL workspace has no SQLite file)
    result = ws.search(strategy="rea", budget=25, batch_size=5, seed=0, run_id="pg")
    assert result.status == FINISHED and result.evaluations == 25
    stored = _sql(postgres_url, "SELECT ncode FROM trials WHERE run_id = 'pg' ORDER BY seq")
    assert len(stored) == 25 == len({r[0] for r in stored})
    assert _sql(postgres_url, "SELECT count(*) FROM rounds WHERE run_id = 'pg'")[0][0] == 5
    assert _sql(postgres_url, "SELECT status, n_trials FROM runs WHERE run_id = 'pg'") == [(FINISHED, 25)]
    assert _sql(postgres_url, "SELECT count(*) FROM checkpoints WHERE thread_id = 'pg'")[0][0] > 5
    assert not (tmp_path / "runs" / "collm-nas.db").exists()  # nothing went to SQLite
    # The same search on SQLite evaluates the same architectures in the same order.
    lite = Workspace(tmp_path / "lite", table_path=table_path)
    lite.search(strategy="rea", budget=25, batch_size=5, seed=0, run_id="pg")
    assert [t.ncode for t in lite.run("pg").trials()] == [r[0] for r in stored]
    assert [r["evaluated"] for r in ws.run("pg").rounds()] == [r["evaluated"] for r in lite.run("pg").rounds()]
    assert ws.result("pg").best.ncode == lite.result("pg").best.ncode
    # Time travel reads and writes the same database.
    assert [h["evaluated"] for h in ws.history("pg")] == [0, 5, 10, 15, 20, 25]
    fork = ws.fork("pg", 2, new_run_id="pg-fork", budget=30)
    assert fork.evaluations == 30 and [t.ncode for t in ws.run("pg-fork").trials()][:10] == [r[0] for r in stored][:10]
    assert len(ws.run("pg").trials()) == 25 and {r.run_id for r in ws.runs()} == {"pg", "pg-fork"}


def test_sigkill_then_resume_from_a_second_process(tmp_path: Path, table_path: str, postgres_url: str) -> None:
    budget = 60
    log = tmp_path / "evaluations.log"
    env = _env(tmp_path, table_path, E2E_EVAL_LOG=str(log), E2E_EVAL_SLEEP="0.02")
    proc = _start(["search", "--store", postgres_url, "--evaluator", "e2e_evaluator:score", "--strategy", "rea",
                   "--budget", str(budget), "--seed", "4", "--llm", "none", "--run-id", "victim", "--json"], env)
    _wait_for_trials(postgres_url, "victim", 20, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    before = _trials(postgres_url, "victim")
    assert 20 <= len(before) < budget
    # Another process (the store named by COLLM_NAS_STORE this time) sees it free, and resumes it.
    other = _env(tmp_path, table_path, store=postgres_url, E2E_EVAL_LOG=str(log))
    listed = _cli(["runs", "--json"], other)
    assert json.loads(listed.stdout)[0]["status"] == "stopped (resumable)", listed.stderr
    resumed = _cli(["resume", "victim", "--json"], other)
    assert resumed.returncode == 0, resumed.stderr
    after = _trials(postgres_url, "victim")
    assert json.loads(resumed.stdout)["evaluations"] == budget == len(after)
    assert all(after[code] == row for code, row in before.items()), "a recorded trial was lost or changed"
    calls = log.read_text().splitlines()
    assert len(set(calls)) == budget and len(calls) <= budget + 1  # only the one in flight may run again
    assert _sql(postgres_url, "SELECT status FROM runs WHERE run_id = 'victim'") == [(FINISHED,)]


def test_cli_runs_and_show_with_store(tmp_path: Path, table_path: str, postgres_url: str) -> None:
    env = _env(tmp_path, table_path)
    done = _cli(["search", "--store", postgres_url, "--strategy", "random", "--budget", "8", "--seed", "1",
                 "--run-id", "team", "--json", "--no-progress"], env)
    assert done.returncode == 0, done.stderr
    # From another folder (another machine's working directory): the same runs.
    elsewhere = _env(tmp_path / "elsewhere", table_path)
    listed = _cli(["runs", "--store", postgres_url, "--json"], elsewhere)
    rows = json.loads(listed.stdout)
    assert [(r["run_id"], r["status"], r["evaluations"]) for r in rows] == [("team", "finished", 8)]
    shown = _cli(["show", "team", "--store", postgres_url, "--format", "json"], elsewhere)
    assert len(json.loads(shown.stdout)["trials"]) == 8
    top = _cli(["show", "team", "--top", "3", "--store", postgres_url], elsewhere)
    assert top.returncode == 0 and "8/8 evaluations" in top.stdout
    missing = _cli(["show", "nobody", "--store", postgres_url], elsewhere)
    assert "unknown run 'nobody'" in _one_line_error(missing) and "***" in missing.stderr
    password = postgres_url.split(":")[2].split("@")[0]
    for out in (done, listed, shown, top, missing):
        assert password not in out.stdout + out.stderr
    empty = _cli(["runs"], elsewhere)  # the default store is still the SQLite file in the runs folder
    assert empty.returncode == 0 and empty.stdout.startswith("no runs in")


def test_approval_flow_across_processes(tmp_path: Path, table_path: str, postgres_url: str) -> None:
    env = _env(tmp_path, table_path, store=postgres_url)
    started = _cli(["search", "--strategy", "random", "--budget", "4", "--batch-size", "2", "--approval",
                    "every-round", "--run-id", "p", "--no-progress"], env)
    assert started.returncode == 0 and "collm-nas approve p" in started.stderr, started.stderr
    ws = Workspace(tmp_path / "runs", table_path=table_path, store=postgres_url)
    pause = ws.pending_approval("p")
    batch = [c["ncode"] for c in pause["candidates"]]
    assert pause["round"] == 1 and len(batch) == 2 and ws.runs()[0].display_status == "awaiting approval"
    # Approve through the Python API in another process.
    code = textwrap.dedent("""
        import json, os
        from collm_nas import Workspace
        ws = Workspace(store=os.environ["COLLM_NAS_STORE"], table_path=os.environ["COLLM_NAS_NB201_TABLE"])
        print(json.dumps(ws.approve("p", "approve").to_dict()))
    """)
    approved = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=180)
    assert approved.returncode == 0, approved.stderr
    result = json.loads(approved.stdout)
    assert result["status"] == "awaiting approval" and result["evaluations"] == 2
    assert [t.ncode for t in ws.run("p").trials()] == batch
    assert ws.pending_approval("p")["round"] == 2
    rejected = _cli(["approve", "p", "--decision", "reject", "--comment", "no", "--json"], env)
    assert rejected.returncode == 0, rejected.stderr
    assert json.loads(rejected.stdout)["status"] == "awaiting approval" and len(ws.run("p").trials()) == 2
    final = _cli(["approve", "p", "--decision", "approve", "--json"], env)
    assert final.returncode == 0, final.stderr
    assert json.loads(final.stdout)["status"] == FINISHED and len(ws.run("p").trials()) == 4
    assert [r["human"]["action"] for r in ws.run("p").rounds() if "human" in r] == ["approve", "reject", "approve"]


# ================================================================ one writer per run
_CLAIMER = textwrap.dedent("""
    import os, socket, sys, time
    socket.gethostname = lambda: sys.argv[2]          # as if on another machine
    from collm_nas.storage import open_trial_store
    from collm_nas.core.errors import UserError
    store = open_trial_store(os.environ["COLLM_NAS_STORE"])
    while time.time() < float(sys.argv[1]):
        time.sleep(0.0005)
    try:
        store.claim("w")
    except UserError as e:
        print("refused", e); sys.exit(0)
    print("won"); sys.stdout.flush(); time.sleep(120)  # holds the run until the test has heard everyone
""")


def _claimers(env: dict[str, str], n: int) -> list[str]:
    """``n`` processes, each as if on its own machine, claim run 'w' at the same instant; their answers."""
    at = time.time() + 4.0
    procs = [subprocess.Popen([sys.executable, "-c", _CLAIMER, str(at), f"machine-{i}"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(n)]
    outs: list[str] = []
    errors: list[str] = []
    try:
        outs = [p.stdout.readline() for p in procs]
    finally:
        for p in procs:
            p.kill()
            errors.append(p.communicate(timeout=60)[1])
    assert len(outs) == n and all(outs), errors
    return outs


def test_one_writer_per_run_on_postgres(tmp_path: Path, table_path: str, postgres_url: str) -> None:
    env = _env(tmp_path, table_path, store=postgres_url, E2E_EVAL_SLEEP="0.25")
    proc = _start(["search", "--evaluator", "e2e_evaluator:score", "--strategy", "random", "--budget", "60",
                   "--run-id", "w", "--llm", "none", "--no-progress"], env)
    try:
        _wait_for_trials(postgres_url, "w", 2, proc)
        second = _cli(["resume", "w"], env)
        assert "still running in process" in _one_line_error(second)
        approving = _cli(["approve", "w", "--decision", "approve"], env)
        _one_line_error(approving)
        # A process on another machine is refused too: the holder's lock, not its host, decides.
        [out] = _claimers(env, 1)
        assert out.startswith("refused") and f"being run by process {proc.pid}" in out, out
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait(timeout=30)
    # The holder is gone: at once (no timeout), of several machines claiming together exactly one wins.
    outs = _claimers(env, 4)
    assert sum(o.startswith("won") for o in outs) == 1, outs
    assert sum(o.startswith("refused") and "only one process" in o for o in outs) == 3, outs
    before = len(_trials(postgres_url, "w"))
    resumed = _cli(["resume", "w", "--json"], _env(tmp_path, table_path, store=postgres_url))
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["evaluations"] == 60 == len(_trials(postgres_url, "w")) > before


# ================================================================ lost connections
def _database(url: str) -> str:
    return url.rsplit("/", 1)[1].split("?", 1)[0]


def _terminate(server, url: str) -> int:
    """End every session on the store's database (as an administrator or a failover would) and wait until they
    are gone; from a session on another database, so that this works while the database refuses connections."""
    database = _database(url)
    pids = [r[0] for r in _sql(server.url(), "SELECT pid FROM pg_stat_activity WHERE datname = %s "
                                             "AND pid <> pg_backend_pid()", (database,))]
    _sql(server.url(), "SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", (pids,))
    deadline = time.time() + 60  # (a guard against a hang, not a measurement)
    while _sql(server.url(), "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", (pids,))[0][0]:
        assert time.time() < deadline, "the terminated sessions did not end"
        time.sleep(0.01)
    return len(pids)


def _allow_connections(server, url: str, allowed: bool) -> None:
    _sql(server.url(), f'ALTER DATABASE "{_database(url)}" ALLOW_CONNECTIONS {str(allowed).lower()}')


def test_a_store_whose_connection_is_killed_keeps_working_and_keeps_its_run(postgres_server,
                                                                           postgres_url: str) -> None:
    from collm_nas.storage.postgres import PostgresTrialStore

    store = PostgresTrialStore(postgres_url)
    store.create_run("r", {})
    assert store.add_trial("r", _result("000001", 1.0, 1, 1.0))
    assert _terminate(postgres_server, postgres_url) >= 1
    assert store.add_trial("r", _result("000002", 2.0, 1, 2.0)) is True  # a write, on a new connection
    _terminate(postgres_server, postgres_url)
    assert [t.ncode for t in store.trials("r")] == ["000001", "000002"]  # a read
    _terminate(postgres_server, postgres_url)
    store.claim("r")  # still its writer: the lock was taken again with the new connection
    other = open_trial_store(postgres_url)
    assert other.get_run("r").held is True
    with pytest.raises(UserError, match=f"being run by process {os.getpid()}"):
        other.claim("r")
    store.update_summary("r", "000002", 2.0)
    assert other.get_run("r").n_trials == 2 and other.count_trials("r") == 2
    # Taken over while cut off (here: another store claims the freed run before this one is back): this
    # one is refused in one line, and does not overwrite the new writer's status.
    _terminate(postgres_server, postgres_url)
    other.claim("r")
    with pytest.raises(UserError, match="taken over .* only one process may run") as refused:
        store.add_trial("r", _result("000003", 3.0, 2, 3.0))
    assert "\n" not in str(refused.value) and postgres_server.password not in str(refused.value)
    with pytest.raises(UserError, match="taken over"):
        store.set_status("r", INTERRUPTED)
    assert other.get_run("r").status == ACTIVE and other.get_run("r").held
    assert [t.ncode for t in other.trials("r")] == ["000001", "000002"]
    other.close()
    store.close()


def test_a_search_whose_connections_are_all_killed_finishes(tmp_path: Path, table_path: str, postgres_server,
                                                            postgres_url: str) -> None:
    budget = 45
    log = tmp_path / "evaluations.log"
    env = _env(tmp_path, table_path, E2E_EVAL_LOG=str(log), E2E_EVAL_SLEEP="0.05")
    proc = _start(["search", "--store", postgres_url, "--evaluator", "e2e_evaluator:score", "--strategy", "random",
                   "--budget", str(budget), "--seed", "5", "--llm", "none", "--run-id", "cut", "--json"], env)
    try:
        for at_least in (8, 20, 32):  # three times, every session of the search (store and checkpointer)
            _wait_for_trials(postgres_url, "cut", at_least, proc)
            assert _terminate(postgres_server, postgres_url) >= 2
        out, err = proc.communicate(timeout=240)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert json.loads(out)["evaluations"] == budget
    stored = _sql(postgres_url, "SELECT ncode FROM trials WHERE run_id = 'cut'")
    assert len(stored) == budget == len({r[0] for r in stored})
    calls = log.read_text().splitlines()
    assert len(calls) == budget == len(set(calls)), "an architecture was evaluated twice"
    assert _sql(postgres_url, "SELECT status, n_trials FROM runs WHERE run_id = 'cut'") == [(FINISHED, budget)]


def test_a_database_that_stays_away_is_one_line_and_loses_nothing(postgres_server, postgres_url: str) -> None:
    from collm_nas.storage.postgres import PostgresTrialStore, Reconnect, postgres_checkpointer

    quick = Reconnect(attempts=3, within_s=1.0, first_wait_s=0.05)
    store = PostgresTrialStore(postgres_url, reconnect=quick)
    store.create_run("r", {})
    for i in range(3):
        store.add_trial("r", _result(f"00000{i}", float(i), 1, float(i)))
    config = {"configurable": {"thread_id": "r", "checkpoint_ns": ""}}
    with postgres_checkpointer(postgres_url, reconnect=quick) as saver:
        saver.put(config, {"v": 4, "id": "1", "ts": "2024-01-01T00:00:00+00:00", "channel_values": {"round": 1},
                           "channel_versions": {"round": "1"}, "versions_seen": {}}, {}, {"round": "1"})
        _allow_connections(postgres_server, postgres_url, False)
        try:
            _terminate(postgres_server, postgres_url)
            with pytest.raises(UserError) as failed:
                store.add_trial("r", _result("000009", 9.0, 2, 9.0))
            with pytest.raises(UserError) as read:
                saver.get_tuple(config)
        finally:
            _allow_connections(postgres_server, postgres_url, True)
        for error, what in ((failed, "record trial 000009"), (read, "read a checkpoint")):
            message = str(error.value)
            assert "\n" not in message and postgres_server.password not in message, message
            assert message.startswith("lost the connection to the PostgreSQL store postgresql://collm:***@"), message
            assert what in message and "not currently accepting connections" in message, message
            assert "collm-nas resume r" in message, message
        # Nothing recorded is lost, and once the server takes connections again both go on.
        assert sorted(_trials(postgres_url, "r")) == ["000000", "000001", "000002"]
        assert saver.get_tuple(config).checkpoint["channel_values"] == {"round": 1}
    assert store.add_trial("r", _result("000009", 9.0, 2, 9.0)) is True
    assert store.count_trials("r") == 4 and store.get_run("r").held
    store.close()


# ================================================================ checkpoint pruning
def test_checkpoints_are_pruned_on_postgres(tmp_path: Path, table_path: str, postgres_url: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLLM_NAS_KEEP_CHECKPOINTS", "6")
    ws = Workspace(tmp_path / "runs", table_path=table_path, store=postgres_url)
    ws.search(strategy="rea", budget=60, batch_size=1, seed=2, run_id="long")
    ids = [r[0] for r in _sql(postgres_url, "SELECT checkpoint_id FROM checkpoints WHERE thread_id = 'long' "
                                            "ORDER BY checkpoint_id DESC")]
    # One per round (60 rounds) and the start, plus at most the 6 most recent.
    assert 61 <= len(ids) <= 61 + 6, len(ids)
    with_writes = {r[0] for r in _sql(postgres_url, "SELECT DISTINCT checkpoint_id FROM checkpoint_writes "
                                                    "WHERE thread_id = 'long'")}
    assert with_writes <= set(ids[:6]), "pending writes of an old checkpoint were kept"
    orphans = _sql(postgres_url, "SELECT b.channel, b.version FROM checkpoint_blobs b WHERE b.thread_id = 'long' "
                                 "AND NOT EXISTS (SELECT 1 FROM checkpoints c WHERE c.thread_id = b.thread_id "
                                 "AND c.checkpoint_ns = b.checkpoint_ns "
                                 "AND c.checkpoint -> 'channel_versions' ->> b.channel = b.version)")
    assert orphans == []
    assert _sql(postgres_url, "SELECT count(*) FROM checkpoint_blobs WHERE thread_id = 'long'")[0][0] > 0
    assert [p["round"] for p in ws.history("long")] == list(range(61))
    child = ws.fork("long", 30, new_run_id="child")  # replays its parent from round 30 exactly
    assert [t.ncode for t in ws.run("child").trials()] == [t.ncode for t in ws.run("long").trials()]
    assert child.evaluations == 60
    report = ws.prune("long", keep_recent=1)
    assert report.rounds_kept == 61 and report.kept <= 62
    assert [p["round"] for p in ws.history("long")] == list(range(61))


# ================================================================ passwords and bad stores
def test_passwords_are_masked_and_never_stored(tmp_path: Path, table_path: str, postgres_server,
                                               postgres_url: str) -> None:
    env = _env(tmp_path, table_path)
    wrong = postgres_url.replace(postgres_server.password, "Wr0ngSecretXyz")
    out = _cli(["runs", "--store", wrong], env)
    assert "password authentication failed" in _one_line_error(out)
    assert "Wr0ngSecretXyz" not in out.stderr and "collm:***@127.0.0.1" in out.stderr
    unreachable = "postgresql://collm:Sup3rSecret@127.0.0.1:1/nowhere?sslmode=disable"
    out = _cli(["runs", "--store", unreachable], env)
    assert "cannot open the PostgreSQL store" in _one_line_error(out) and "Sup3rSecret" not in out.stderr
    query_form = f"postgres://collm@127.0.0.1:{postgres_server.port}/x?password=QuerySecret99"
    out = _cli(["runs", "--store", query_form], env)
    assert "QuerySecret99" not in _one_line_error(out) and "password=***" in out.stderr
    for bad, why in [("mysql://root:Hidden123@db/x", "unknown store"), ("postgres://", "names no server")]:
        out = _cli(["runs", "--store", bad], env)
        assert why in _one_line_error(out) and "Hidden123" not in out.stderr
    # A real search: the password is in no run record, checkpoint, log or message.
    done = _cli(["search", "--store", postgres_url, "--strategy", "rea", "--budget", "6", "--run-id", "s",
                 "--json", "--no-progress"], env)
    assert done.returncode == 0, done.stderr
    password = postgres_server.password
    assert password not in done.stdout + done.stderr
    for table in ("runs", "trials", "rounds", "checkpoints", "checkpoint_blobs", "checkpoint_writes"):
        rows = _sql(postgres_url, f"SELECT * FROM {table}")
        assert rows or table == "checkpoint_writes", table
        for value in (v for row in rows for v in row):
            raw = bytes(value) if isinstance(value, (bytes, memoryview)) else json.dumps(value, default=str).encode()
            assert password.encode() not in raw, table
    for path in (tmp_path / "runs").rglob("*") if (tmp_path / "runs").exists() else ():
        assert not path.is_file() or password.encode() not in path.read_bytes()


def test_a_user_without_create_rights_works_once_the_tables_exist(tmp_path: Path, table_path: str,
                                                                  postgres_server, postgres_url: str) -> None:
    database = postgres_url.rsplit("/", 1)[1]
    _sql(postgres_url, "CREATE ROLE analyst LOGIN PASSWORD 'An4lystPw'")
    _sql(postgres_url, f'GRANT CONNECT ON DATABASE "{database}" TO analyst')
    analyst = f"postgresql://analyst:An4lystPw@127.0.0.1:{postgres_server.port}/{database}"
    with pytest.raises(UserError, match="cannot set up the trial store's tables .*analyst:\\*\\*\\*@") as e:
        Workspace(tmp_path / "a", table_path=table_path, store=analyst)
    assert "An4lystPw" not in str(e.value)
    Workspace(tmp_path / "owner", table_path=table_path, store=postgres_url).search(budget=3, run_id="own")
    _sql(postgres_url, "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO analyst")
    _sql(postgres_url, "GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO analyst")
    ws = Workspace(tmp_path / "a", table_path=table_path, store=analyst)
    assert ws.search(budget=4, run_id="theirs").evaluations == 4
    assert {r.run_id for r in ws.runs()} == {"own", "theirs"}


def test_store_locators_and_masking() -> None:
    assert mask_url("postgresql://u:p%40ss@h:5432/db?sslmode=require&password=x") == \
        "postgresql://u:***@h:5432/db?sslmode=require&password=***"
    assert mask_url("postgres://u@h/db") == "postgres://u@h/db"
    assert scrub('failed for "p@ss" at postgres://u:p%40ss@h/db', "postgres://u:p%40ss@h/db") == \
        'failed for "***" at postgres://u:***@h/db'
    assert parse_store("postgres://u@h:1/d").kind == "postgres"
    assert parse_store("POSTGRESQL://u@h/d").kind == "postgres"
    assert parse_store("sqlite:////tmp/x.db") == parse_store("/tmp/x.db")
    assert parse_store("sqlite:///runs/x.db") == parse_store("runs/x.db") and parse_store("x.db").kind == "sqlite"
    with pytest.raises(UserError, match="names a host"):
        parse_store("sqlite://server/x.db")
    with pytest.raises(UserError, match="unknown store 'mysql://u:\\*\\*\\*@h/d'"):
        parse_store("mysql://u:pw@h/d")
