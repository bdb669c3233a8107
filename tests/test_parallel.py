"""Parallel evaluation: serial, a process pool and Ray give the same results; worker crashes fail one
trial; a controller killed mid-batch loses no finished evaluation and repeats none; Ctrl-C stops the pool."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from collm_nas import Workspace
from collm_nas.core.errors import UserError
from collm_nas import backends
from collm_nas.backends import EvaluatorSpec, make_backend
from collm_nas.backends import process as process_backend
from collm_nas.backends.spool import spool_write
from collm_nas.evaluators import Trial, evaluation_seed
from collm_nas.evaluators.seeding import current_seed, seeded
from collm_nas.spaces import SPACES, space_from_dict

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
import parallel_evaluator  # noqa: E402,F401  (the workers import it by name)

TINY = {"name": "tiny", "decisions": [{"name": "first", "options": ["c", "d", "e"]},
                                      {"name": "second", "options": ["x", "y", "z"]}]}
CODES = ["333132", "000011", "123412", "444444", "210321", "012340", "331122", "432104", "999999"]


def _table_spec(table_path: str, seed: int = 0) -> EvaluatorSpec:
    return EvaluatorSpec("table", SPACES.resolve("nb201"), seed=seed, dataset="cifar10",
                         options={"table": table_path})


def _fn_spec(target: str, space=None, seed: int = 7) -> EvaluatorSpec:
    return EvaluatorSpec(target, space or SPACES.resolve("nb201"), seed=seed, metric="score")


def _same(results: list[Trial]) -> list[tuple]:
    """Everything but timings."""
    return [(r.ncode, r.arch, r.status, r.error, r.metrics) for r in results]


def _evaluate(spec: EvaluatorSpec, backend: str, codes: list[str], workers: int | None = 2, **kw) -> list[Trial]:
    runner = make_backend(backend, spec, workers=workers, **kw)
    try:
        return runner.evaluate(codes)
    finally:
        runner.close()


def _require_ray() -> None:
    """Skip without Ray, except in CI (COLLM_NAS_REQUIRE_RAY=1), where these tests must run."""
    if importlib.util.find_spec("ray") is None:
        if os.environ.get("COLLM_NAS_REQUIRE_RAY") == "1":
            pytest.fail("Ray is not installed but COLLM_NAS_REQUIRE_RAY=1: pip install 'collm-nas[ray]'")
        pytest.skip("Ray is not installed (pip install 'collm-nas[ray]')")


@pytest.fixture(scope="module")
def ray_local():
    """A local Ray for this module's tests (2 CPUs, no dashboard), as on a CI machine."""
    _require_ray()
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    yield ray
    ray.shutdown()


# ------------------------------------------------------------------ seeds
def test_evaluation_seed_comes_from_run_seed_and_code_only() -> None:
    assert evaluation_seed(0, "333132") == evaluation_seed(0, "333132")
    assert len({evaluation_seed(s, c) for s in (0, 1) for c in ("333132", "333133")}) == 4
    assert all(0 <= evaluation_seed(s, "1234") < 2**32 for s in range(50))
    random.seed(123)
    expected = random.random()
    random.seed(123)
    with seeded(evaluation_seed(0, "x")) as seed:
        assert current_seed() == seed
        first = random.random()
    assert current_seed() is None and random.random() == expected  # the caller's generator is untouched
    with seeded(evaluation_seed(0, "x")):
        assert random.random() == first


# ------------------------------------------------------- identical results
@pytest.mark.e2e
def test_table_evaluator_gives_the_same_results_serial_and_on_a_process_pool(table_path: str) -> None:
    spec = _table_spec(table_path)
    serial = _evaluate(spec, "serial", CODES)
    assert [r.ncode for r in serial] == CODES
    assert serial[-1].status == "failed" and serial[0].metrics["cifar10_valid"] > 91
    assert _same(_evaluate(spec, "process", CODES)) == _same(serial)


@pytest.mark.e2e
def test_seeded_torch_function_gives_the_same_results_serial_and_on_a_process_pool() -> None:
    spec = _fn_spec("parallel_evaluator:seeded_score", seed=7)
    serial = _evaluate(spec, "serial", CODES[:8])
    assert all(r.status == "ok" for r in serial)
    # Each evaluation ran under the seed of (run seed, code), whatever ran it.
    assert [r.metrics["seed"] for r in serial] == [float(evaluation_seed(7, c)) for c in CODES[:8]]
    assert _same(_evaluate(spec, "process", CODES[:8], workers=2)) == _same(serial)
    # In another order, and under another run seed.
    reordered = _evaluate(spec, "serial", CODES[:8][::-1])
    assert _same(reordered[::-1]) == _same(serial)
    other = _evaluate(_fn_spec("parallel_evaluator:seeded_score", seed=8), "serial", CODES[:2])
    assert other[0].metrics["score"] != serial[0].metrics["score"]


@pytest.mark.server
@pytest.mark.slow
def test_cli_search_on_ray(tmp_path: Path, table_path: str) -> None:
    """The command line starts (and stops) its own local Ray; results equal a serial run's.
    (Before the tests that start the module's Ray, so that only one runs at a time.)"""
    _require_ray()
    env = _env(tmp_path, table_path)
    common = ["search", "--evaluator", "parallel_evaluator:seeded_score", "--strategy", "rea", "--budget", "8",
              "--batch-size", "4", "--seed", "5", "--json"]
    on_ray = _cli(*common, "--backend", "ray", "--workers", "2", "--run-id", "ray", env=env, timeout=300)
    assert on_ray.returncode == 0, on_ray.stderr
    assert "Traceback" not in on_ray.stderr and json.loads(on_ray.stdout)["config"]["backend"] == "ray"
    ws = Workspace(tmp_path / "runs", table_path=table_path)
    ws.search(space="nb201", evaluator="parallel_evaluator:seeded_score", strategy="rea", budget=8, batch_size=4,
              seed=5, run_id="serial")
    assert _stored(ws.db_path, "ray") == _stored(ws.db_path, "serial") and len(_stored(ws.db_path, "ray")) == 8


@pytest.mark.server
def test_ray_gives_the_same_results_as_serial(ray_local, table_path: str) -> None:
    spec = _table_spec(table_path)
    assert _same(_evaluate(spec, "ray", CODES)) == _same(_evaluate(spec, "serial", CODES))
    spec = _fn_spec("parallel_evaluator:seeded_score", seed=7)
    serial = _evaluate(spec, "serial", CODES[:8])
    assert _same(_evaluate(spec, "ray", CODES[:8])) == _same(serial)


@pytest.mark.e2e
def test_a_whole_search_is_the_same_on_every_backend(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    backends = ["serial", "process"]
    if importlib.util.find_spec("ray") is not None or os.environ.get("COLLM_NAS_REQUIRE_RAY") == "1":
        request.getfixturevalue("ray_local")
        backends.append("ray")
    ws = Workspace(tmp_path / "runs")
    runs = {}
    for backend in backends:
        result = ws.search(space="nb201", evaluator="parallel_evaluator:seeded_score", metric="score",
                           strategy="rea", budget=12, batch_size=4, seed=3, backend=backend, workers=2,
                           run_id=f"rea-{backend}")
        assert result.evaluations == 12 and result.config["backend"] == backend
        runs[backend] = [(t.ncode, t.round, t.status, t.metrics) for t in ws.run(result.run_id).trials()]
    assert all(runs[backend] == runs["serial"] for backend in backends)
    assert not (tmp_path / "runs" / "spool" / "rea-process").exists()  # finished: nothing left to recover


# ------------------------------------------------------------- worker crashes
@pytest.mark.e2e
def test_a_worker_crash_fails_one_trial_and_the_search_goes_on(tmp_path: Path) -> None:
    space = tmp_path / "tiny.yaml"
    space.write_text(json.dumps(TINY))
    ws = Workspace(tmp_path / "runs")
    result = ws.search(space=str(space), evaluator="parallel_evaluator:crash_on_cx", metric="score",
                       strategy="random", budget=9, batch_size=3, seed=1, backend="process", workers=2)
    assert result.status == "finished" and result.evaluations == 9
    failed = [t for t in ws.run(result.run_id).trials() if not t.ok]
    assert [(t.ncode, t.error) for t in failed] == [("00", "worker process died while evaluating (exit code 3)")]


@pytest.mark.server
def test_a_ray_worker_crash_fails_one_trial(ray_local) -> None:
    spec = _fn_spec("parallel_evaluator:crash_on_cx", space=space_from_dict(TINY), seed=1)
    results = _evaluate(spec, "ray", ["01", "00", "12"])
    assert [r.status for r in results] == ["ok", "failed", "ok"]
    assert results[1].error.startswith("worker process died while evaluating") and "\n" not in results[1].error


@pytest.mark.e2e
def test_process_workers_are_pinned_one_gpu_each(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(process_backend, "gpu_ids", lambda: ["0", "1"])  # as on a machine with two GPUs
    spec = _fn_spec("parallel_evaluator:cuda_devices")
    results = _evaluate(spec, "process", CODES[:4], workers=None)
    assert {r.metrics["gpu"] for r in results} == {0.0, 1.0}


@pytest.mark.e2e
def test_a_spooled_result_is_not_evaluated_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "calls.log"
    monkeypatch.setenv("PAR_EVAL_LOG", str(log))
    spool = tmp_path / "spool"
    spool.mkdir()
    spec = _fn_spec("parallel_evaluator:seeded_score")
    kept = Trial("000011", "kept", metrics={"score": 1.5})
    spool_write(spool, kept)  # as a worker leaves it when the controller dies
    results = _evaluate(spec, "process", ["333132", "000011"], spool_dir=spool)
    assert results[1] == kept and results[0].status == "ok"
    assert len(log.read_text().splitlines()) == 2  # start and done of 333132 only
    assert list(spool.iterdir()) == []  # handed over: gone from the spool


def test_bad_settings_are_one_line_errors(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, table_path: str) -> None:
    spec = _table_spec(table_path)
    with pytest.raises(UserError, match="unknown backend 'gpu'; use serial, process or ray"):
        make_backend("gpu", spec)
    with pytest.raises(UserError, match="workers must be at least 1, got 0"):
        make_backend("process", spec, workers=0)
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(UserError, match=r"pip install 'collm-nas\[ray\]'"):
        backends.require_backend("ray")
    with pytest.raises(UserError, match=r"pip install 'collm-nas\[ray\]'"):
        _evaluate(spec, "ray", ["333132"])
    ws = Workspace(tmp_path / "runs", table_path=table_path)
    with pytest.raises(UserError, match=r"pip install 'collm-nas\[ray\]'"):
        ws.search(budget=5, backend="ray", run_id="no-ray")
    assert ws.runs() == []  # refused before the run was created


# ------------------------------------------------------ the real command line
def _env(tmp_path: Path, table_path: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(COLLM_NAS_RUNS_DIR=str(tmp_path / "runs"), COLLM_NAS_NB201_TABLE=table_path,
               PYTHONPATH=str(ROOT / "tests"), COLLM_NAS_PROGRESS="never", **extra)
    return env


def _cli(*args: str, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "collm_nas.cli", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


def _stored(db: Path, run_id: str) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT ncode, round, status, metrics FROM trials WHERE run_id = ? ORDER BY seq",
                            (run_id,)).fetchall()
    return [(r[0], r[1], r[2], json.loads(r[3])) for r in rows]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # a zombie is dead


def _wait_dead(pids: set[int], timeout: float = 10) -> set[int]:
    deadline = time.time() + timeout
    while time.time() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.05)
    return {p for p in pids if _alive(p)}


def _log_lines(log: Path) -> list[tuple[str, int, str]]:
    if not log.exists():
        return []
    return [(kind, int(pid), text) for kind, pid, text in (line.split(" ", 2) for line in log.read_text().splitlines())]


@pytest.mark.e2e
def test_cli_search_on_a_process_pool_matches_serial(tmp_path: Path, table_path: str) -> None:
    env = _env(tmp_path, table_path)
    common = ["search", "--strategy", "local", "--budget", "16", "--batch-size", "4", "--seed", "2", "--json"]
    pooled = _cli(*common, "--backend", "process", "--workers", "2", "--run-id", "pooled", env=env)
    assert pooled.returncode == 0, pooled.stderr
    serial = _cli(*common, "--run-id", "serial", env=env)
    assert serial.returncode == 0, serial.stderr
    a, b = json.loads(pooled.stdout), json.loads(serial.stdout)
    assert a["config"]["backend"] == "process" and a["config"]["workers"] == 2
    assert a["best"] == b["best"] and a["evaluations"] == b["evaluations"] == 16
    db = tmp_path / "runs" / "collm-nas.db"
    assert _stored(db, "pooled") == _stored(db, "serial")
    bad = _cli("search", "--workers", "0", "--backend", "process", env=env)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "workers must be at least 1" in bad.stderr
    bad = _cli("search", env={**env, "COLLM_NAS_BACKEND": "gpu"})
    assert bad.returncode == 2 and "COLLM_NAS_BACKEND" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.e2e
@pytest.mark.slow
def test_sigkill_mid_batch_loses_no_finished_evaluation_and_repeats_none(tmp_path: Path, table_path: str) -> None:
    budget, run_id = 18, "victim"
    log = tmp_path / "calls.log"
    env = _env(tmp_path, table_path, PAR_EVAL_LOG=str(log), PAR_EVAL_SLEEP="0.15", PAR_EVAL_SLOW="8")
    db = tmp_path / "runs" / "collm-nas.db"
    spool = tmp_path / "runs" / "spool" / run_id
    args = ["search", "--evaluator", "parallel_evaluator:seeded_score", "--metric", "score", "--strategy", "rea",
            "--budget", str(budget), "--batch-size", "6", "--seed", "2", "--backend", "process", "--workers", "2",
            "--run-id", run_id, "--json"]
    proc = subprocess.Popen([sys.executable, "-m", "collm_nas.cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    # Kill the controller once a worker has finished a code that waits behind a slower one of its batch
    # (with seed 2 the batches are slow-fast-fast-fast-fast-fast, then fast-slow-fast-fast-fast-fast).
    deadline, spooled = time.time() + 120, set()
    while not spooled:
        assert time.time() < deadline, "no result ever waited in the spool"
        assert proc.poll() is None, f"the search ended before it could be killed: {proc.communicate()}"
        spooled = {p.stem for p in spool.glob("*.json")} if spool.is_dir() else set()
        time.sleep(0.01)
    proc.kill()
    proc.wait(timeout=30)
    before = _stored(db, run_id)
    assert len(before) < budget
    workers = {pid for _, pid, _ in _log_lines(log)}
    assert workers and _wait_dead(workers) == set(), "orphaned workers outlived the controller"
    logged = len(_log_lines(log))

    resumed = _cli("resume", run_id, "--json", env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert len({pid for _, pid, _ in _log_lines(log)[logged:]} - workers) == 2  # on the run's own 2 workers
    assert json.loads(resumed.stdout)["evaluations"] == budget
    after = _stored(db, run_id)
    assert len(after) == budget and after[: len(before)] == before
    space = SPACES.resolve("nb201")
    texts = {",".join(f"{k}={v}" for k, v in sorted(space.decode(t[0]).items())): t[0] for t in after}
    lines = _log_lines(log)
    done = [texts[text] for kind, _, text in lines if kind == "done"]
    started = [texts[text] for kind, _, text in lines if kind == "start"]
    assert sorted(done) == sorted(texts.values()), "a finished evaluation was lost or ran twice"
    assert all(started.count(code) == 1 for code in spooled), "a spooled result was evaluated again"
    assert len(started) <= budget + 2  # only the evaluations cut short by the kill ran again
    assert not spool.exists()
    # The killed and resumed run is the run that was never killed, as a serial search makes it.
    ws = Workspace(tmp_path / "reference", table_path=table_path)
    ws.search(space="nb201", evaluator="parallel_evaluator:seeded_score", metric="score", strategy="rea",
              budget=budget, batch_size=6, seed=2, run_id="reference")
    assert _stored(ws.db_path, "reference") == after


@pytest.mark.e2e
@pytest.mark.slow
def test_ctrl_c_stops_the_pool_and_resume_finishes(tmp_path: Path, table_path: str) -> None:
    log = tmp_path / "calls.log"
    env = _env(tmp_path, table_path, PAR_EVAL_LOG=str(log), PAR_EVAL_SLEEP="0.3")
    db = tmp_path / "runs" / "collm-nas.db"
    proc = subprocess.Popen([sys.executable, "-m", "collm_nas.cli", "search", "--evaluator",
                             "parallel_evaluator:seeded_score", "--strategy", "random", "--budget", "12",
                             "--batch-size", "4", "--backend", "process", "--workers", "2", "--run-id", "ctrlc"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (db.exists() and _stored_count(db, "ctrlc") >= 2 and _in_flight(log)):
        assert time.time() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)  # while a worker is in the middle of an evaluation
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "collm-nas resume ctrlc" in err and "Traceback" not in err
    workers = {pid for _, pid, _ in _log_lines(log)}
    assert _wait_dead(workers, timeout=2) == set(), "workers outlived Ctrl-C"
    resumed = _cli("resume", "ctrlc", "--json", env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["evaluations"] == 12 == _stored_count(db, "ctrlc")


def _in_flight(log: Path) -> bool:
    kinds = [kind for kind, _, _ in _log_lines(log)]
    return kinds.count("start") > kinds.count("done")


def _stored_count(db: Path, run_id: str) -> int:
    try:
        return len(_stored(db, run_id))
    except sqlite3.OperationalError:
        return 0


def test_two_runs_in_one_process_each_see_their_own_evaluation_seed() -> None:
    """The seed of the evaluation in progress is per thread (a context variable), not process-global: two
    runs evaluating at the same time in one process (two dashboard answers, say) cannot clobber it."""
    import threading

    barrier = threading.Barrier(2)
    seen: dict[str, tuple] = {}

    def evaluate(code: str) -> None:
        with seeded(evaluation_seed(0, code), libraries=False) as mine:
            barrier.wait()  # both are inside their evaluation now
            first = current_seed()
            barrier.wait()  # and both have looked once
            seen[code] = (mine, first, current_seed())

    threads = [threading.Thread(target=evaluate, args=(code,)) for code in ("333132", "000011")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen["333132"][0] != seen["000011"][0]
    assert all(mine == first == last for mine, first, last in seen.values())
    assert current_seed() is None
