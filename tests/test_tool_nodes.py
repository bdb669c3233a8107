"""Tools as real LangGraph tool nodes: an LLM role that can call tools consults ``decode_ncode``,
``check_ncodes``, ``lookup_trials`` (and, in hybrid, ``rank_pool``) through the graph's ``tools`` node (a
LangGraph ``ToolNode``) before it answers; bounded rounds, counted in the LLM figures, shown by ``show``.

The model is a scripted OpenAI-compatible server over real HTTP (``fake_openai``): it calls each tool, an
unknown tool, and a tool with bad arguments; each is answered with a tool message, never a crash.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from collm_nas import Workspace
from collm_nas.graphs.graph import build_graph
from collm_nas.storage import Checkpointer

from fake_openai import FakeOpenAIServer, Reply

STRATEGY = {"summary": "keep 3x3 convolutions and vary the last edges", "patterns": ["nor_conv_3x3 is strong"],
            "directions": {}, "constraints": [], "example_codes": ["333133"]}


def role_of(request: dict) -> str:
    system = next((m.get("content") or "" for m in request.get("messages", []) if m.get("role") == "system"), "")
    return "navigator" if "Navigator" in system else "generator"


def tool_results(request: dict) -> list[dict]:
    """The tool messages of the request (what the tool node answered), in order."""
    return [m for m in request.get("messages", []) if m.get("role") == "tool"]


def tool_names(request: dict) -> list[str]:
    return sorted(t["function"]["name"] for t in request.get("tools") or [])


class ToolScript:
    """The Navigator calls tools in two rounds, then answers; the Generator answers at once."""

    def __init__(self, codes: list[list[str]]) -> None:
        self.codes = list(codes)
        self.navigator_requests: list[dict] = []

    def __call__(self, request: dict) -> Reply:
        if role_of(request) == "navigator":
            self.navigator_requests.append(request)
            done = len([m for m in request["messages"] if m.get("role") == "assistant"])
            if done == 0:
                return Reply.tool_calls(("decode_ncode", {"ncode": "333132"}),
                                        ("check_ncodes", {"ncodes": ["333132", "000000", "33x333"]}),
                                        ("lookup_trials", {"query": "best", "k": 3}))
            if done == 1:
                return Reply.tool_calls(("no_such_tool", {"x": 1}),
                                        ("check_ncodes", {"codes": "333132"}),  # bad arguments
                                        ("lookup_trials", '{"query": "by_option", "decision": "edge_1<-0", '))
            return Reply.tool_call("NavigatorAnswer", STRATEGY)
        return Reply.tool_call("CandidateAnswer", {"codes": self.codes.pop(0) if self.codes else []})


@pytest.fixture
def llm_env(monkeypatch: pytest.MonkeyPatch):
    def apply(server: FakeOpenAIServer, decoding: str = "tools") -> None:
        monkeypatch.setenv("COLLM_NAS_LLM_BASE_URL", server.base_url)
        monkeypatch.setenv("COLLM_NAS_LLM_API_KEY", "sk-test")
        monkeypatch.setenv("COLLM_NAS_LLM_MODEL", "fake-model")
        monkeypatch.setenv("COLLM_NAS_LLM_DECODING", decoding)
        monkeypatch.setenv("COLLM_NAS_LLM_TIMEOUT_S", "5")
        monkeypatch.setenv("COLLM_NAS_LLM_RETRY_MAX_ATTEMPTS", "2")
        monkeypatch.setenv("COLLM_NAS_LLM_RETRY_INITIAL_WAIT_S", "0.01")
        monkeypatch.setenv("COLLM_NAS_LLM_RETRY_JITTER_S", "0")

    return apply


def _search(ws: Workspace, **kw: Any):
    return ws.search(space="nb201", dataset="cifar10", strategy=kw.pop("strategy", "collm"), llm="endpoint",
                     seed=0, **kw)


def test_the_navigator_consults_every_tool_through_the_tool_node(tmp_path: Path, table_path: str, llm_env) -> None:
    script = ToolScript([["333133", "233132", "133132"], ["333123", "313132", "331132"]])
    ws = Workspace(tmp_path / "runs", table_path=table_path)
    with FakeOpenAIServer(default=Reply.dynamic(script)) as server:
        llm_env(server)
        result = _search(ws, budget=6, batch_size=3, run_id="t", tool_rounds=3)
    assert result.status == "finished" and result.evaluations == 6
    first, second, third = script.navigator_requests[:3]
    assert tool_names(first) == ["NavigatorAnswer", "check_ncodes", "decode_ncode", "lookup_trials"]
    # Round 1 of tools: decode, check (with reasons), lookup; each answered, in order.
    decoded, checked, looked = (json.loads(m["content"]) for m in tool_results(second))
    assert decoded["architecture"].startswith("|nor_conv_3x3~0|") and decoded["choices"]["edge_1<-0"] == "nor_conv_3x3"
    assert [r["valid"] for r in checked] == [True, False, False]
    assert "degenerate" in checked[1]["problems"][0]["message"] and "position 3" in checked[2]["problems"][0]["message"]
    assert looked == {"evaluated": 0, "best": []}  # nothing evaluated before round 1
    # Round 2 of tools: an unknown tool and bad arguments are answered with error messages, never raised.
    unknown, bad_args, bad_json = tool_results(third)[3:]
    assert "no_such_tool is not a valid tool" in unknown["content"]
    assert "ncodes" in bad_args["content"] and "error" in bad_args["content"].lower()
    assert "error" in bad_json["content"].lower()
    # In round 2 the lookup sees round 1's trials.
    later = script.navigator_requests[3:]
    assert later and json.loads(tool_results(later[1])[2]["content"])["evaluated"] == 3
    # Counted in the figures and shown.
    llm = ws.run("t").rounds()[0]["llm"]
    assert llm["tool_calls"] == {"decode_ncode": 1, "check_ncodes": 2, "lookup_trials": 2, "no_such_tool": 1}, llm
    assert llm["tool_rounds"] == 2 and llm["tool_errors"] == 3
    summary = ws.run("t").llm_summary()
    assert summary["tool_rounds"] == 4 and summary["tool_calls"]["check_ncodes"] == 4
    # The tool node is a node of the graph, and the run went through it (the checkpoints say so).
    assert "tools" in build_graph().get_graph().nodes
    with Checkpointer(ws.store_url) as saver:
        nexts = [s.next for s in build_graph(saver).get_state_history({"configurable": {"thread_id": "t"}})]
    assert ("tools",) in nexts
    # The state drops the conversation once the role has answered: checkpoints stay small.
    with Checkpointer(ws.store_url) as saver:
        last = build_graph(saver).get_state({"configurable": {"thread_id": "t"}})
    assert not last.values.get("conversation")


def test_tool_rounds_are_bounded_then_the_answer_is_forced(tmp_path: Path, table_path: str, llm_env) -> None:
    forced: list[Any] = []
    answer_tools: dict[str, dict] = {}

    def script(request: dict) -> Reply:
        for tool in request.get("tools") or []:
            if tool["function"]["name"].endswith("Answer"):
                answer_tools[tool["function"]["name"]] = tool["function"]["parameters"]
        if role_of(request) == "generator":
            return Reply.tool_call("CandidateAnswer", {"codes": ["333133", "233132"]})
        choice = request.get("tool_choice")
        if isinstance(choice, dict):  # the answer is forced: give it
            forced.append(choice)
            return Reply.tool_call("NavigatorAnswer", STRATEGY)
        return Reply.tool_call("lookup_trials", {"query": "best"})  # would consult tools for ever

    ws = Workspace(tmp_path / "runs", table_path=table_path)
    with FakeOpenAIServer(default=Reply.dynamic(script)) as server:
        llm_env(server)
        result = _search(ws, budget=2, batch_size=2, run_id="b", tool_rounds=2)
    assert result.evaluations == 2
    assert forced == [{"type": "function", "function": {"name": "NavigatorAnswer"}}]
    # The answer tools carry the space's bounded schemas (llama.cpp makes the call's grammar of them): texts
    # of bounded length, option names as enums, codes as the legal, unseen ones.
    navigator = answer_tools["NavigatorAnswer"]["properties"]
    assert navigator["summary"]["maxLength"] == 100 and "{1,100}" in navigator["summary"]["pattern"]
    assert navigator["directions"]["properties"]["edge_1<-0"]["properties"]["prefer"]["items"]["enum"][0] == "none"
    codes = answer_tools["CandidateAnswer"]["properties"]["codes"]
    assert codes["items"]["minLength"] == codes["items"]["maxLength"] == 6 and codes["minItems"] == 2
    llm = ws.run("b").rounds()[0]["llm"]
    assert llm["tool_rounds"] == 2 and llm["tool_calls"] == {"lookup_trials": 2}


def test_no_tool_node_without_tool_calling_or_with_zero_rounds(tmp_path: Path, table_path: str, llm_env) -> None:
    """The direct path stays: plain-text (or grammar) decoding sends no tools; tool_rounds=0 offers none."""
    def text_script(request: dict) -> Reply:
        if role_of(request) == "navigator":
            return Reply.text(json.dumps(STRATEGY))
        return Reply.text('{"codes": ["333133", "233132"]}')

    ws = Workspace(tmp_path / "runs", table_path=table_path)
    with FakeOpenAIServer(default=Reply.dynamic(text_script)) as server:
        llm_env(server, decoding="text")
        _search(ws, budget=2, batch_size=2, run_id="text")
        assert all("tools" not in body for body in server.chat_bodies)
    with FakeOpenAIServer(default=Reply.dynamic(ToolScript([["333133", "233132"]]))) as server:
        llm_env(server)
        _search(ws, budget=2, batch_size=2, run_id="zero", tool_rounds=0)
        navigator = [b for b in server.chat_bodies if role_of(b) == "navigator"]
        assert [tool_names(b) for b in navigator] == [["NavigatorAnswer"]]  # the answer as a forced call only
    assert "tools" not in (ws.run("zero").rounds()[0]["llm"].get("tool_calls") or {})


def test_hybrid_roles_may_ask_the_learned_ranker(tmp_path: Path, table_path: str, llm_env) -> None:
    asked: list[dict] = []

    def script(request: dict) -> Reply:
        if role_of(request) == "navigator":
            results = tool_results(request)
            if not results:
                return Reply.tool_call("rank_pool", {"codes": ["333132", "000000", "333133", "111111"]})
            asked.append(json.loads(results[0]["content"]))
            return Reply.tool_call("NavigatorAnswer", STRATEGY)
        return Reply.tool_call("CandidateAnswer", {"codes": ["333133", "233132", "133132", "333123", "313132",
                                                              "331132", "332132", "333032"]})

    ws = Workspace(tmp_path / "runs", table_path=table_path)
    with FakeOpenAIServer(default=Reply.dynamic(script)) as server:
        llm_env(server)
        result = _search(ws, strategy="hybrid", budget=4, batch_size=2, run_id="h")
    assert result.evaluations == 4
    first = asked[0]
    assert sorted(first["ranked_best_first"]) == ["111111", "333132", "333133"]
    assert first["left_out"] == {"000000": "illegal"}
    later = asked[1]  # round 2: the codes round 1 evaluated are named as such
    pool = {"333132", "000000", "333133", "111111"}
    evaluated = {t.ncode for t in ws.run("h").trials() if t.round == 1} & pool
    assert evaluated and all(later["left_out"][c] == "already evaluated" for c in evaluated)
    assert set(later["ranked_best_first"]) == pool - evaluated - {"000000"}


def test_run_graph_runs_the_tool_turns_in_the_tool_node(tmp_path: Path, table_path: str, llm_env) -> None:
    """run_graph, the driver tests and scripts use, answers tool calls in the graph's tool node."""
    from collm_nas.llm.session import open_llm
    from collm_nas.core import RunConfig
    from collm_nas.engine.prepare import open_loop
    from collm_nas.graphs.drive import run_graph
    from collm_nas.storage import SQLiteTrialStore

    script = ToolScript([["333133", "233132", "133132"]])
    store = SQLiteTrialStore(tmp_path / "e.db")
    config = RunConfig(strategy="collm", budget=3, batch_size=3, dataset="cifar10", llm="endpoint", metric=None)
    store.create_run("e", config.model_dump(mode="json"))
    with FakeOpenAIServer(default=Reply.dynamic(script)) as server:
        llm_env(server)
        with open_llm("endpoint", {}, roles=("navigator", "generator")) as roles:
            loop = open_loop("e", config, store, str(tmp_path / "e.db"), table_path, llm=roles)
            steps: list[str] = []
            end = run_graph(loop, on_step=lambda step, before, update: steps.append(step))
    assert end["stop_reason"] == "budget" and len(store.trials("e")) == 3
    assert steps[:5] == ["plan", "tools", "plan", "tools", "plan"]
    assert store.rounds("e")[0]["llm"]["tool_calls"]["no_such_tool"] == 1
