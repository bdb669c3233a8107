"""CoLLM-NAS on the real embedded model (SmolLM2-135M through llama.cpp's server).

Runs where the ``local`` extra is installed (CI installs it); with
``COLLM_NAS_REQUIRE_LOCAL_LLM=1`` a missing model fails instead of skipping.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from collm_nas import Workspace
from collm_nas.agents.local_model import INSTALL_HINT, local_model_available
from collm_nas.graphs.components import forget_components

pytestmark = pytest.mark.local_llm

if not local_model_available():
    if os.environ.get("COLLM_NAS_REQUIRE_LOCAL_LLM") == "1":
        pytest.fail(f"COLLM_NAS_REQUIRE_LOCAL_LLM=1 but {INSTALL_HINT}", pytrace=False)
    pytest.skip("the local model is not installed", allow_module_level=True)


def _answers(base_url: str) -> bool:
    """Whether a server still answers at ``base_url`` (other tests may run servers of their own)."""
    import urllib.request

    try:
        with urllib.request.urlopen(base_url + "/models", timeout=2):
            return True
    except OSError:
        return False


def test_collm_search_on_the_local_model_evaluates_only_legal_new_codes(tmp_path, table_path):
    ws = Workspace(tmp_path / "runs", table_path=table_path)
    events: list[dict] = []
    result = ws.search(space="nb201", dataset="cifar10", strategy="collm", llm="local", budget=10, batch_size=5,
                       seed=0, run_id="local", on_progress=events.append)
    forget_components()
    assert result.status == "finished" and result.evaluations == 10
    run = ws.run("local")
    trials = run.trials()
    assert len({t.ncode for t in trials}) == 10
    llm_events = [e for e in events if e.get("event") == "llm"]
    assert llm_events and llm_events[0]["source"] == "local"
    base_url = llm_events[0]["roles"]["generator"]["base_url"]
    assert base_url.startswith("http://127.0.0.1:")
    summary = run.llm_summary()
    assert summary["modes"] == {"navigator": ["grammar"], "generator": ["grammar"]}
    # Under the grammar the model cannot write an illegal or already evaluated code.
    assert summary["illegal"] == 0
    assert summary["calls"] >= 4 and summary["failed_calls"] == 0
    assert summary["prompt_tokens"] > 0 and summary["completion_tokens"] > 0
    assert summary["accepted"] >= 5  # most of the batch came from the model, not the fallback
    assert not _answers(base_url)  # the server was stopped with the search


def test_ctrl_c_during_a_local_search_stops_the_server_and_leaves_the_run_resumable(tmp_path, table_path):
    import json
    import signal
    import sqlite3
    import sys
    import time
    from pathlib import Path

    import re

    env = dict(os.environ, COLLM_NAS_RUNS_DIR=str(tmp_path / "runs"), COLLM_NAS_NB201_TABLE=table_path)
    db = Path(tmp_path / "runs" / "collm-nas.db")
    proc = subprocess.Popen([sys.executable, "-m", "collm_nas.cli", "search", "--strategy", "collm", "--llm", "local",
                             "--budget", "30", "--batch-size", "3", "--run-id", "cc", "--no-progress"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline:
        assert proc.poll() is None, proc.communicate()
        if db.exists():
            try:
                with sqlite3.connect(db) as conn:
                    if conn.execute("SELECT count(*) FROM trials").fetchone()[0] >= 3:
                        break
            except sqlite3.OperationalError:
                pass
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    base_url = re.search(r"at (http://127\.0\.0\.1:\d+/v1)", err).group(1)
    assert proc.returncode == 130, err
    assert "collm-nas resume cc" in err and "Traceback" not in err
    assert not _answers(base_url)
    runs = subprocess.run([sys.executable, "-m", "collm_nas.cli", "runs", "--json"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert json.loads(runs.stdout)[0]["status"] == "interrupted (resumable)"
