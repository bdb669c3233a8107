"""Human approval: the gate's replies through the Python API, the graph itself,
the CLI (stdin), a rejection's comment reaching the Navigator, and the
one-writer rule across processes. Real LangGraph, real SQLite, real table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from langgraph.types import Command

from collm_nas import Workspace
from collm_nas.core.errors import UserError
from collm_nas.graphs.graph import build_graph
from collm_nas.graphs.state import SearchContext
from collm_nas.storage import Checkpointer
from fake_openai import FakeOpenAIServer, Reply
from test_collm import STRATEGY, last_user, llm_env, role_of  # noqa: F401  (llm_env is a fixture)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def ws(tmp_path: Path, table_path: str) -> Workspace:
    return Workspace(tmp_path / "runs", table_path=table_path)


def _codes(ws: Workspace, run_id: str) -> list[str]:
    return [t.ncode for t in ws.run(run_id).trials()]


def test_every_round_pauses_and_approve_evaluates_exactly_the_batch(ws: Workspace) -> None:
    events: list[dict] = []
    result = ws.search(strategy="rea", budget=6, batch_size=3, seed=1, run_id="a", approval="every_round",
                       on_progress=events.append)
    assert result.status == "awaiting approval" and result.evaluations == 0
    assert [e for e in events if e.get("event") == "approval"][0]["pause"]["round"] == 1
    pause = ws.pending_approval("a")
    batch = [c["ncode"] for c in pause["candidates"]]
    assert len(batch) == 3 and pause["budget_left"] == 6 and pause["strategy"]["summary"]
    assert all(c["valid"] and c["arch"].startswith("|") and c["decoded"] for c in pause["candidates"])
    assert ws.runs()[0].display_status == "awaiting approval"
    with pytest.raises(UserError, match="waiting for approval"):
        ws.resume("a")
    result = ws.approve("a", "approve")
    assert result.status == "awaiting approval" and _codes(ws, "a") == batch  # round 2 pauses in turn
    second = ws.pending_approval("a")
    assert second["round"] == 2 and second["budget_left"] == 3
    assert second["estimated_cost_s"] is not None and "mean of this run's 3" in second["cost_source"]
    result = ws.approve("a", {"action": "approve"})
    assert result.status == "finished" and result.evaluations == 6
    assert ws.pending_approval("a") is None
    assert [r["human"]["action"] for r in ws.run("a").rounds()] == ["approve", "approve"]


def test_edit_drops_and_adds_and_an_invalid_code_is_refused_with_the_pause_open(ws: Workspace) -> None:
    ws.search(strategy="random", budget=4, batch_size=2, seed=0, run_id="e", approval="every_round")
    batch = [c["ncode"] for c in ws.pending_approval("e")["candidates"]]
    for bad, why in [("000000", "degenerate cell"), ("12345", "5 characters"), ("3331x2", "")]:
        with pytest.raises(UserError, match=f"cannot add '{bad}'.*{why}.*pause stays open"):
            ws.approve("e", "edit", add=[bad])
    with pytest.raises(UserError, match="not in this batch"):
        ws.approve("e", "edit", drop=["444444"])
    with pytest.raises(UserError, match="leaves no architecture"):
        ws.approve("e", "edit", drop=batch)
    with pytest.raises(UserError, match="only 4 of the budget"):
        ws.approve("e", "edit", add=["333132", "333133", "223133"])
    assert ws.pending_approval("e")["candidates"][0]["ncode"] == batch[0] and ws.run("e").trials() == []
    ws.approve("e", "edit", drop=[batch[0]], add=["333132"])
    assert _codes(ws, "e") == [batch[1], "333132"]
    with pytest.raises(UserError, match="already evaluated"):
        ws.approve("e", "edit", add=["333132"])
    ws.approve("e", "approve")
    assert len(_codes(ws, "e")) == 4 and ws.run("e").status == "finished"


def test_graph_keeps_the_pause_open_on_an_invalid_edit_sent_straight_to_it(ws: Workspace) -> None:
    """What LangGraph Studio does: Command(resume=...) on the graph, no pre-check."""
    ws.search(strategy="random", budget=2, batch_size=2, seed=0, run_id="g", approval="every_round")
    batch = [c["ncode"] for c in ws.pending_approval("g")["candidates"]]
    config = {"configurable": {"thread_id": "g"}}
    context = SearchContext(loop=ws._loop("g", ws.run("g").config))
    with Checkpointer(ws.store_url) as saver:
        graph = build_graph(saver)
        list(graph.stream(Command(resume={"action": "edit", "add": ["000000"]}), config, context=context,
                          durability="sync"))
        pause = ws.pending_approval("g")
        assert "cannot add '000000'" in pause["error"] and [c["ncode"] for c in pause["candidates"]] == batch
        list(graph.stream(Command(resume="sideways"), config, context=context, durability="sync"))
        assert "unknown approval action 'sideways'" in ws.pending_approval("g")["error"]
        list(graph.stream(Command(resume={"action": "edit", "drop": [batch[1]]}), config, context=context,
                          durability="sync"))
    assert _codes(ws, "g") == [batch[0]]  # the edit after two refusals took effect, once


def test_the_pause_also_speaks_langchains_human_in_the_loop_form(ws: Workspace) -> None:
    """The interrupt carries a HITLRequest (action_requests, review_configs) and takes the
    {"decisions": [...]} resume value, through the API and straight through the graph."""
    ws.search(strategy="random", budget=8, batch_size=2, seed=0, run_id="h", approval="every_round")
    pause = ws.pending_approval("h")
    batch = [c["ncode"] for c in pause["candidates"]]
    (action,) = pause["action_requests"]
    assert action["name"] == "evaluate_batch" and action["args"] == {"codes": batch}
    assert "Round 1" in action["description"] and batch[0] in action["description"]
    (review,) = pause["review_configs"]
    assert review["action_name"] == "evaluate_batch" and review["allowed_decisions"] == ["approve", "edit", "reject"]
    assert review["args_schema"]["properties"]["codes"]["type"] == "array"
    edited = {"decisions": [{"type": "edit", "edited_action": {"name": "evaluate_batch",
                                                               "args": {"codes": [batch[1], "333132"]}}}]}
    ws.approve("h", edited)
    assert _codes(ws, "h") == [batch[1], "333132"]
    assert ws.run("h").rounds()[0]["human"] == {"action": "edit", "drop": [batch[0]], "add": ["333132"],
                                                "batch": [batch[1], "333132"]}
    for bad, why in [({"decisions": [{"type": "edit", "edited_action": {"name": "evaluate_batch",
                                                                        "args": {"codes": ["000000"]}}}]},
                      "cannot add '000000'"),
                     ({"decisions": [{"type": "respond"}]}, "unknown decision type 'respond'"),
                     ({"decisions": [{"type": "approve"}, {"type": "approve"}]}, "exactly one decision")]:
        with pytest.raises(UserError, match=why):
            ws.approve("h", bad)
    ws.approve("h", {"decisions": [{"type": "reject", "message": "more convolutions"}]})
    assert ws.run("h").rounds()[1]["human"] == {"action": "reject", "comment": "more convolutions"}
    # Straight to the graph, as Agent Chat UI or Studio would send it: an unchanged edit is an approval.
    second = [c["ncode"] for c in ws.pending_approval("h")["candidates"]]
    config = {"configurable": {"thread_id": "h"}}
    context = SearchContext(loop=ws._loop("h", ws.run("h").config))
    same = {"decisions": [{"type": "edit", "edited_action": {"name": "evaluate_batch", "args": {"codes": second}}}]}
    with Checkpointer(ws.store_url) as saver:
        list(build_graph(saver).stream(Command(resume=same), config, context=context, durability="sync"))
    assert _codes(ws, "h")[2:] == second and ws.run("h").rounds()[2]["human"] == {"action": "approve"}


def test_over_cost_pauses_only_when_the_estimate_is_unknown_or_too_high(ws: Workspace) -> None:
    with pytest.raises(UserError, match="needs a threshold"):
        ws.search(strategy="rea", budget=4, run_id="x", approval="over_cost")
    result = ws.search(strategy="rea", budget=6, batch_size=2, seed=0, run_id="c", approval="over_cost",
                       approval_threshold_s=5.0)
    pause = ws.pending_approval("c")
    assert result.status == "awaiting approval" and "not known yet" in pause["reason"]
    result = ws.approve("c", "approve")  # table lookups cost microseconds: no further pause
    assert result.status == "finished" and result.evaluations == 6
    result = ws.search(strategy="rea", budget=4, batch_size=2, seed=0, run_id="d", approval="over_cost",
                       approval_threshold_s=0.0)
    ws.approve("d", "approve")
    assert "exceeds the threshold 0.0 s" in ws.pending_approval("d")["reason"]


def test_a_rejection_comment_reaches_the_next_navigator_prompt(tmp_path, table_path, llm_env) -> None:
    navigator_prompts: list[str] = []
    counter = iter(range(10_000))

    def script(request: dict) -> Reply:
        if role_of(request) == "navigator":
            navigator_prompts.append(last_user(request))
            return Reply.text(json.dumps(STRATEGY))
        k = next(counter)
        return Reply.text(json.dumps({"codes": [f"3{(k * 3 + i) % 5}31{i % 4 + 1}2" for i in range(2)]}))

    ws = Workspace(tmp_path / "runs", table_path=table_path)
    comment = "stop proposing pooling layers; try 3x3 convolutions on edge 3<-0"
    with FakeOpenAIServer(default=Reply.dynamic(script)) as server:
        llm_env(server)
        ws.search(strategy="collm", llm="endpoint", budget=4, batch_size=2, seed=0, run_id="r",
                  approval="every_round")
        result = ws.approve("r", "reject", comment=comment)
        assert result.status == "awaiting approval" and ws.run("r").trials() == []
        assert ws.pending_approval("r")["round"] == 2
        ws.approve("r", "approve")
        ws.approve("r", "approve")
    assert len(navigator_prompts) == 3
    assert comment not in navigator_prompts[0]
    assert comment in navigator_prompts[1] and "rejected" in navigator_prompts[1]
    assert comment not in navigator_prompts[2]  # once read, it is the Navigator's own business
    rounds = ws.run("r").rounds()
    assert rounds[0]["rejected"] and rounds[0]["human"] == {"action": "reject", "comment": comment}
    assert ws.run("r").status == "finished" and len(_codes(ws, "r")) == 4


def _cli(args: list[str], env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "collm_nas.cli", *args], env=env, input=stdin,
                          capture_output=True, text=True, timeout=120)


def _env(tmp_path: Path, table_path: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(COLLM_NAS_RUNS_DIR=str(tmp_path / "runs"), COLLM_NAS_NB201_TABLE=table_path,
               PYTHONPATH=str(ROOT / "tests"), **extra)
    return env


@pytest.mark.e2e
def test_cli_interactive_approval_through_stdin(tmp_path: Path, table_path: str) -> None:
    env = _env(tmp_path, table_path)
    # round 1: a typo, an edit adding an illegal code (refused), an edit dropping #1 and adding 333132;
    # round 2: reject with a comment; round 3: approve.
    answers = "x\ne\n\n000000\ne\n1\n333132\nr\nfewer pooling layers\na\n"
    done = _cli(["search", "--strategy", "rea", "--budget", "5", "--batch-size", "3", "--approve",
                 "--run-id", "i", "--no-progress", "--json"], env, answers)
    assert done.returncode == 0, done.stderr
    assert "answer a, e or r" in done.stderr and "cannot add '000000'" in done.stderr
    assert "waiting for approval" in done.stderr and "budget left 5 of 5" in done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "finished" and result["evaluations"] == 5
    shown = json.loads(_cli(["show", "i", "--format", "json"], env).stdout)
    codes = [t["ncode"] for t in (shown["trials"] if isinstance(shown, dict) else shown)]
    assert "333132" in codes[:3] and len(codes) == 5


@pytest.mark.e2e
def test_cli_pause_then_approve_from_another_command(tmp_path: Path, table_path: str) -> None:
    env = _env(tmp_path, table_path)
    started = _cli(["search", "--strategy", "random", "--budget", "4", "--batch-size", "2", "--approval",
                    "every-round", "--run-id", "p", "--no-progress"], env)
    assert started.returncode == 0 and "collm-nas approve p" in started.stderr
    shown = _cli(["approve", "p"], env)
    assert shown.returncode == 0 and "round 1: waiting for approval" in shown.stdout
    bad = _cli(["approve", "p", "--decision", "edit", "--add", "000000"], env)
    assert bad.returncode != 0 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
    assert "cannot add '000000'" in bad.stderr
    ok = _cli(["approve", "p", "--decision", "approve"], env)
    assert ok.returncode == 0 and "paused for approval" in ok.stderr
    last = _cli(["approve", "p", "--decision", "reject", "--comment", "no"], env)
    assert last.returncode == 0
    listed = json.loads(_cli(["runs", "--json"], env).stdout)
    assert listed[0]["status"] == "awaiting approval"
    final = _cli(["resume", "p", "--approve", "--json"], env, "a\n")
    assert final.returncode == 0, final.stderr
    assert json.loads(final.stdout)["evaluations"] == 4
    again = _cli(["approve", "p"], env)
    assert again.returncode != 0 and "not waiting for approval" in again.stderr


@pytest.mark.e2e
def test_one_writer_per_run(tmp_path: Path, table_path: str) -> None:
    env = _env(tmp_path, table_path, E2E_EVAL_SLEEP="0.2")
    proc = subprocess.Popen([sys.executable, "-m", "collm_nas.cli", "search", "--evaluator", "e2e_evaluator:score",
                             "--strategy", "random", "--budget", "200", "--run-id", "w", "--llm", "none",
                             "--no-progress"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ws = Workspace(tmp_path / "runs", table_path=table_path)
        deadline = time.time() + 60
        while time.time() < deadline and (ws.store.get_run("w") is None or ws.store.count_trials("w") < 2):
            time.sleep(0.05)
        assert ws.store.count_trials("w") >= 2
        second = _cli(["resume", "w"], env)
        assert second.returncode != 0 and "still running" in second.stderr and "Traceback" not in second.stderr
        with pytest.raises(UserError, match="being run by process"):
            ws.store.claim("w")
        with pytest.raises(UserError, match="being run by process"):
            ws.approve("w", "approve")
    finally:
        proc.kill()
        proc.wait(timeout=30)
    # Its holder is dead: of several processes claiming at the same moment, exactly one wins.
    claimer = textwrap.dedent(f"""
        import sys, time
        from collm_nas.storage import SQLiteTrialStore
        from collm_nas.core import UserError
        store = SQLiteTrialStore({str(tmp_path / 'runs' / 'collm-nas.db')!r})
        while time.time() < {time.time() + 3.0}:
            pass
        try:
            store.claim("w")
        except UserError as e:
            print("refused", e); sys.exit(0)
        print("won"); sys.stdout.flush(); time.sleep(3)
    """)
    procs = [subprocess.Popen([sys.executable, "-c", claimer], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(4)]
    outs = [p.communicate(timeout=60)[0] for p in procs]
    assert sum(o.startswith("won") for o in outs) == 1, outs
    assert sum("refused" in o and "only one process" in o for o in outs) == 3
    before = len(Workspace(tmp_path / "runs", table_path=table_path).run("w").trials())
    resumed = _cli(["resume", "w", "--json"], _env(tmp_path, table_path))
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["evaluations"] == 200 >= before
