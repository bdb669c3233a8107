"""The real embedded model's server dies or hangs in the middle of a search: the run says so, restarts it, goes
on, and loses nothing. (Stand-in servers for the watch's rules: tests/test_server_watch.py.)"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request

import pytest

from collm_nas import Workspace
from collm_nas.llm.local_server import INSTALL_HINT, local_model_available

pytestmark = pytest.mark.local_llm

if not local_model_available():
    if os.environ.get("COLLM_NAS_REQUIRE_LOCAL_LLM") == "1":
        pytest.fail(f"COLLM_NAS_REQUIRE_LOCAL_LLM=1 but {INSTALL_HINT}", pytrace=False)
    pytest.skip("the local model is not installed", allow_module_level=True)


def _answers(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(base_url + "/models", timeout=2):
            return True
    except OSError:
        return False


class Saboteur:
    """Sends ``sig`` to the run's local model server once, when the first round has been recorded."""

    def __init__(self, sig: int) -> None:
        self.sig = sig
        self.servers: list[dict] = []
        self.warnings: list[str] = []
        self.sent_to: int | None = None

    def __call__(self, event: dict) -> None:
        if event.get("event") == "llm":
            self.servers = event["servers"]
        elif event.get("event") == "warning":
            self.warnings.append(event["message"])
        elif event.get("event") == "round" and self.sent_to is None:
            self.sent_to = self.servers[0]["pid"]
            os.kill(self.sent_to, self.sig)


def _check_nothing_lost(ws: Workspace, run_id: str, budget: int) -> dict:
    run = ws.run(run_id)
    trials = run.trials()
    assert len(trials) == budget and len({t.ncode for t in trials}) == budget
    assert all(t.ok for t in trials)
    return run.llm_summary()


def test_a_server_killed_mid_run_is_named_restarted_and_the_run_loses_nothing(tmp_path, table_path):
    ws = Workspace(tmp_path / "runs", table_path=table_path)
    saboteur = Saboteur(signal.SIGKILL)
    result = ws.search(space="nb201", dataset="cifar10", strategy="collm", llm="local", budget=9, batch_size=3,
                       seed=0, run_id="killed", on_progress=saboteur)
    assert result.status == "finished" and result.evaluations == 9
    (line,) = [w for w in saboteur.warnings if "ended:" in w]
    log = saboteur.servers[0]["log"]
    assert f"(pid {saboteur.sent_to}) ended: killed by signal 9 (SIGKILL); restarted it" in line
    assert f"log: {log}" in line and os.path.isfile(log)
    summary = _check_nothing_lost(ws, "killed", 9)
    assert summary["server_restarts"] == 1 and summary["server_events"] == [line]
    # The restarted server answered every round after the kill: nothing fell back, nothing failed.
    assert summary["fallback_rounds"] == 0 and summary["failed_calls"] == 0 and not summary["degraded"]
    assert summary["llm_rounds"] == summary["rounds"] == 3 and summary["completion_tokens"] > 0
    assert result.degraded is None
    assert "[collm-nas] restart 1 of the server" in open(log, encoding="utf-8").read()
    assert not _answers(saboteur.servers[0]["base_url"])  # the restarted server stopped with the search


def test_a_server_that_stops_answering_is_restarted(tmp_path, table_path):
    """SIGSTOP: the process lives but answers nothing; the call times out, the health check gets no answer."""
    ws = Workspace(tmp_path / "runs", table_path=table_path)
    saboteur = Saboteur(signal.SIGSTOP)
    result = ws.search(space="nb201", dataset="cifar10", strategy="collm", llm="local", budget=6, batch_size=3,
                       seed=1, run_id="hung", on_progress=saboteur, llm_options={"timeout_s": 20})
    assert result.status == "finished" and result.evaluations == 6
    (line,) = [w for w in saboteur.warnings if "stopped answering" in w]
    assert f"(pid {saboteur.sent_to}) stopped answering" in line and "restarted it" in line
    summary = _check_nothing_lost(ws, "hung", 6)
    assert summary["server_restarts"] == 1 and summary["fallback_rounds"] == 0
    with pytest.raises(ProcessLookupError):  # the stopped server was ended, not left behind
        os.kill(saboteur.sent_to, 0)


def test_restarts_used_up_the_run_falls_back_says_so_and_require_llm_fails_it(tmp_path, table_path):
    """No restarts allowed: the CLI run goes on with its fallback, ends with the DEGRADED line, exits 3."""
    env = dict(os.environ, COLLM_NAS_RUNS_DIR=str(tmp_path / "runs"), COLLM_NAS_NB201_TABLE=table_path,
               COLLM_NAS_LLM_MAX_RESTARTS="0", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "collm_nas.cli", "search", "--strategy", "collm", "--llm", "local",
                             "--budget", "6", "--batch-size", "3", "--run-id", "down", "--no-progress",
                             "--require-llm", "some"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = ""
    while "local model server pid" not in first:  # the CLI names the server's pid before the first call
        first = proc.stderr.readline()
        assert first or proc.poll() is None, proc.communicate()
    pid = int(re.search(r"local model server pid (\d+)", first).group(1))
    os.kill(pid, signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 3, (out, err)
    assert "Traceback" not in err
    assert "ended: killed by signal 9 (SIGKILL); not restarted: all 0 restarts of this run are used up" in err
    last = out.strip().splitlines()[-1]
    assert last.startswith("DEGRADED: the LLM never answered; 2 rounds ran on the LLM-free fallback 'local'"), out
    assert "collm-nas: error: --require-llm some: the LLM never answered" in err
    # The run itself finished on the fallback and kept every trial.
    show = subprocess.run([sys.executable, "-m", "collm_nas.cli", "show", "down", "--format", "json"], env=env,
                          capture_output=True, text=True, timeout=60)
    data = json.loads(show.stdout)
    assert data["status"] == "finished" and len(data["trials"]) == 6
    assert data["llm"]["never_answered"] and data["llm"]["server_down"]
    text = subprocess.run([sys.executable, "-m", "collm_nas.cli", "show", "down"], env=env, capture_output=True,
                          text=True, timeout=60).stdout
    assert "DEGRADED: the LLM never answered" in text and "given up after its restarts" in text
    plain = subprocess.run([sys.executable, "-m", "collm_nas.cli", "search", "--strategy", "collm", "--llm", "local",
                            "--budget", "3", "--batch-size", "3", "--run-id", "fine", "--no-progress", "--json",
                            "--require-llm", "all"], env=env, capture_output=True, text=True, timeout=300)
    assert plain.returncode == 0, plain.stderr
    data = json.loads(plain.stdout)
    assert data["degraded"] is None and data["llm"]["llm_rounds"] == 1 and data["llm"]["completion_tokens"] > 0
