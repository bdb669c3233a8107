"""CoLLM-NAS on the real embedded model (SmolLM2-135M through llama.cpp's server).

Runs where the ``local`` extra is installed (CI installs it); with
``COLLM_NAS_REQUIRE_LOCAL_LLM=1`` a missing model fails instead of skipping.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from collm_nas import Workspace
from collm_nas.llm.local_server import INSTALL_HINT, local_model_available


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


def test_the_real_model_calls_a_tool_through_the_tool_node_then_answers(tmp_path, table_path):
    """Tool calling on llama.cpp's server: the model is asked to call check_ncodes (its arguments are its own),
    the graph's ToolNode answers, and the model then writes its strategy with the result in view."""
    from langchain_core.messages import AIMessage

    from collm_nas.agents.collm import LLMNavigator, NavigatorAnswer, parse_strategy
    from collm_nas.llm.session import open_llm
    from collm_nas.core import RunConfig
    from collm_nas.engine.prepare import open_loop
    from collm_nas.graphs.tool_calls import run_tool_calls
    from collm_nas.storage import SQLiteTrialStore
    from collm_nas.tools.grammar import code_language, strategy_json_schema

    store = SQLiteTrialStore(tmp_path / "t.db")
    config = RunConfig(strategy="collm", budget=4, dataset="cifar10", llm="local", decoding="tools")
    store.create_run("t", config.model_dump(mode="json"))
    with open_llm("local", {"decoding": "tools"}, log_path=tmp_path / "llm.log") as roles:
        loop = open_loop("t", config, store, str(tmp_path / "t.db"), table_path, llm=roles)
        tools = loop.role_tools("navigator")
        assert sorted(t.name for t in tools) == ["check_ncodes", "decode_ncode", "lookup_trials"]
        chat = roles.chat("navigator")
        messages = LLMNavigator().messages(loop.context({}, 1))
        first = chat.converse(messages, output_model=NavigatorAnswer, tools=tools, tool_choice="check_ncodes")
        assert first is not None
        result, message = first
        assert isinstance(message, AIMessage)
        called = [c["name"] for c in message.tool_calls] + [c.get("name") for c in message.invalid_tool_calls]
        assert called and called[0] == "check_ncodes", message
        message = message.model_copy(update={"content": message.content or "(calling tools)"})  # as tool_turn does
        answers = run_tool_calls(tools, message, [*messages, message])  # the ToolNode, outside a search graph
        assert len(answers) == len(called) and answers[0].tool_call_id == (message.tool_calls or
                                                                          message.invalid_tool_calls)[0]["id"]
        schema = strategy_json_schema(loop.space, code_language(loop.checker))  # as the Navigator passes it
        second = chat.converse([*messages, message, *answers], output_model=NavigatorAnswer, tools=tools,
                               force_answer=True, parse_text=parse_strategy, answer_schema=schema)
        assert second is not None and second[0].mode == "tools"
        assert second[0].value is not None and second[0].value.summary is not None


def test_a_search_in_tool_mode_on_the_real_model(tmp_path, table_path):
    ws = Workspace(tmp_path / "runs", table_path=table_path)
    result = ws.search(space="nb201", dataset="cifar10", strategy="collm", llm="local", decoding="tools",
                       tool_rounds=2, budget=4, batch_size=2, seed=0, run_id="tools")
    assert result.status == "finished" and result.evaluations == 4
    summary = ws.run("tools").llm_summary()
    assert summary["modes"] == {"navigator": ["tools"], "generator": ["tools"]}
    assert summary["calls"] >= 4
    assert summary["tool_rounds"] <= 2 * 2 * 2  # bounded: two roles, two rounds, two tool rounds each at most


def test_the_real_model_ranks_the_learned_rankers_best_candidates(tmp_path, table_path, monkeypatch):
    """lmsearcher --ranker-pool learned on SmolLM2: every ranked round is the model's answer, held by the pool
    grammar to the learned ranker's best five, and the evaluated code is that answer."""
    import collm_nas.agents.lmsearcher as lmsearcher

    rankings: list[list[str]] = []
    real = lmsearcher.learned_ranking

    def recorded(ctx, pool, acquisition="ei"):
        rankings.append(real(ctx, pool, acquisition))
        return rankings[-1]

    monkeypatch.setattr(lmsearcher, "learned_ranking", recorded)
    ws = Workspace(tmp_path / "runs", table_path=table_path)
    result = ws.search(space="nb201", dataset="cifar100", strategy="lmsearcher", llm="local", ranker_pool="learned",
                       budget=14, seed=0, run_id="narrowed")
    assert result.status == "finished" and result.evaluations == 14 and len(rankings) == 4
    run = ws.run("narrowed")
    summary = run.llm_summary()
    assert summary["modes"] == {"ranker": ["grammar"]} and summary["failed_calls"] == 0
    assert summary["llm_rounds"] == summary["wanted_rounds"] == 4 and summary["completion_tokens"] > 0
    late = [t.ncode for t in run.trials()][10:]
    assert all(code in ranking[:5] for code, ranking in zip(late, rankings))
    assert all("llm on learned pools ranker" in r["strategy"] for r in run.rounds() if r["round"] > 10)
