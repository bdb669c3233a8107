"""LangGraph Studio: a real `langgraph dev` server on a free loopback port, driven with the
`langgraph_sdk` client the way Studio drives it (thread, run, interrupt, Command(resume=...)).
Real server, real graph, real NAS-Bench-201 table; the trial store is SQLite in a tmp folder."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
import json
from typing import Any

import pytest

from collm_nas import Workspace


pytestmark = pytest.mark.server
ROOT = Path(__file__).resolve().parents[1]
LANGGRAPH = Path(sys.executable).parent / "langgraph"
STREAM = ["custom", "updates"]

if importlib.util.find_spec("langgraph_sdk") is None or importlib.util.find_spec("langgraph_api") is None \
        or not LANGGRAPH.exists():
    pytest.skip("needs the studio extra (langgraph-cli[inmem]): pip install -e '.[studio]'", allow_module_level=True)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/ok", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@contextmanager
def _langgraph_dev(home: Path, table_path: str, **env_extra: str) -> Iterator[dict[str, Any]]:
    """`langgraph dev` on langgraph.json, in its own process group (killed as a group at the end)."""
    port = _free_port()
    env = dict(os.environ, COLLM_NAS_NB201_TABLE=table_path, COLLM_NAS_RUNS_DIR=str(home / "default-runs"),
               LANGGRAPH_CLI_NO_ANALYTICS="1", LANGSMITH_TRACING="false", PYTHONUNBUFFERED="1", **env_extra)
    env.pop("COLLM_NAS_LLM_BASE_URL", None)
    if "COLLM_NAS_STORE" not in env_extra:
        env.pop("COLLM_NAS_STORE", None)
    log = (home / "server.log").open("wb")
    started = time.perf_counter()
    proc = subprocess.Popen(
        [str(LANGGRAPH), "dev", "--port", str(port), "--no-browser", "--no-reload",
         "--config", str(ROOT / "langgraph.json")],
        cwd=home, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while not _healthy(url):
            if proc.poll() is not None or time.time() > deadline:
                tail = (home / "server.log").read_text(errors="replace")[-3000:]
                pytest.fail(f"langgraph dev did not come up (exit code {proc.poll()}):\n{tail}")
            time.sleep(0.2)
        yield {"url": url, "home": home, "start_s": time.perf_counter() - started, "log": home / "server.log"}
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)
        log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, table_path: str) -> Iterator[dict[str, Any]]:
    # the server's cwd: its .langgraph_api store lands here
    with _langgraph_dev(tmp_path_factory.mktemp("studio"), table_path) as running:
        yield running


@pytest.fixture
def client(server: dict[str, Any]) -> Any:
    from langgraph_sdk import get_sync_client

    return get_sync_client(url=server["url"])


def _events(parts: list[Any], kind: str) -> list[dict[str, Any]]:
    return [p.data for p in parts if p.event == kind]


def _pause(parts: list[Any]) -> dict[str, Any]:
    """The approval payload of the stream's interrupt (exactly one)."""
    interrupts = [i for u in _events(parts, "updates") for i in u.get("__interrupt__", [])]
    assert len(interrupts) == 1, [p.event for p in parts]
    return interrupts[0]["value"]


def test_the_server_serves_the_typed_search_graph(client: Any, server: dict[str, Any]) -> None:
    assert server["start_s"] < 60
    assistant = next(a for a in client.assistants.search() if a["graph_id"] == "search")
    schemas = client.assistants.get_schemas(assistant["assistant_id"])
    form = schemas["input_schema"]["properties"]
    for field in ("space", "dataset", "strategy", "budget", "seed", "batch_size", "approval",
                  "approval_threshold_s", "llm", "llm_model", "llm_base_url", "fallback", "prior", "run_id"):
        assert field in form, field
    assert "rea" in form["strategy"]["examples"] and form["approval"]["enum"] == ["never", "every_round", "over_cost"]
    assert "table" in form["evaluator"]["examples"] and "tool_rounds" in form  # generated from RunConfig
    assert form["budget"]["default"] == 100 and form["budget"]["description"]
    assert set(schemas["context_schema"]["properties"]) == {"runs_dir", "table_path"}


def test_search_with_approval_every_round_edit_then_approve(client: Any, server: dict[str, Any],
                                                              table_path: str) -> None:
    runs = server["home"] / "runs"
    thread = client.threads.create()["thread_id"]
    request = {"space": "nb201", "dataset": "cifar10", "strategy": "rea", "budget": 6, "batch_size": 3,
               "approval": "every_round"}
    parts = list(client.runs.stream(thread, "search", input=request, context={"runs_dir": str(runs)},
                                    stream_mode=STREAM))
    started = [e for e in _events(parts, "custom") if e.get("event") == "started"]
    assert len(started) == 1 and started[0]["db_path"] == str(runs / "collm-nas.db")
    run_id = started[0]["run_id"]
    pause = _pause(parts)
    assert pause["kind"] == "approval" and pause["run_id"] == run_id and pause["round"] == 1
    assert pause["budget_left"] == 6 and pause["error"] is None and "approve" in pause["reply"]
    batch = [c["ncode"] for c in pause["candidates"]]
    assert len(batch) == 3 and "333132" not in batch
    for candidate in pause["candidates"]:
        assert {"ncode", "arch", "valid", "estimated_cost_s"} <= set(candidate)
        assert candidate["valid"] and candidate["arch"].startswith("|")
    assert client.threads.get(thread)["status"] == "interrupted"

    # An invalid edit keeps the pause open, with the error shown in the next payload.
    parts = list(client.runs.stream(thread, "search", command={"resume": {"action": "edit", "add": ["000000"]}},
                                    stream_mode=STREAM))
    pause = _pause(parts)
    assert "cannot add '000000'" in pause["error"] and [c["ncode"] for c in pause["candidates"]] == batch
    assert not _events(parts, "custom")  # nothing was evaluated

    # Resumed without a context: the run keeps the runs folder it started with.
    edit = {"action": "edit", "drop": [batch[0]], "add": ["333132"]}
    parts = list(client.runs.stream(thread, "search", command={"resume": edit}, stream_mode=STREAM))
    custom = _events(parts, "custom")
    evaluated = [e["ncode"] for e in custom if e.get("event") == "evaluation"]
    assert evaluated == [batch[1], batch[2], "333132"]
    (progress,) = [e for e in custom if e.get("event") == "round"]
    assert progress["round"] == 1 and progress["evaluated"] == 3 and progress["budget"] == 6
    assert progress["best"]["ncode"] == "333132" and progress["summary"]  # the best of NAS-Bench-201 CIFAR-10
    pause = _pause(parts)
    assert pause["round"] == 2 and pause["budget_left"] == 3 and pause["error"] is None

    parts = list(client.runs.stream(thread, "search", command={"resume": "approve"}, stream_mode=STREAM))
    custom = _events(parts, "custom")
    assert [e["round"] for e in custom if e.get("event") == "round"] == [2]
    (finished,) = [e for e in custom if e.get("event") == "finished"]
    assert finished["stop_reason"] == "budget" and finished["best"]["ncode"] == "333132"
    assert not [i for u in _events(parts, "updates") for i in u.get("__interrupt__", [])]
    assert not _events(parts, "error")
    assert client.threads.get(thread)["status"] == "idle"
    values = client.threads.get_state(thread)["values"]
    assert values["run_id"] == run_id and values["evaluated"] == 6 and values["stop_reason"] == "budget"

    run = Workspace(runs, table_path=table_path).run(run_id)
    codes = [t.ncode for t in run.trials()]
    assert len(codes) == 6 and codes[:3] == [batch[1], batch[2], "333132"]
    assert run.status == "finished" and run.config.approval == "every_round"
    assert [r["human"]["action"] for r in run.rounds()] == ["edit", "approve"]


def test_a_bad_request_fails_the_run_in_one_line_and_the_thread_runs_the_next(client: Any, server: dict[str, Any],
                                                                             table_path: str) -> None:
    thread = client.threads.create()["thread_id"]
    parts = list(client.runs.stream(thread, "search", input={"strategy": "rea", "budget": 0}, stream_mode=STREAM))
    (error,) = _events(parts, "error")
    assert error["error"] == "SearchError" and "\n" not in error["message"]
    assert error["message"].startswith("budget must be at least 1, got 0")
    parts = list(client.runs.stream(thread, "search", input={"strategy": "nope"}, stream_mode=STREAM))
    assert "unknown strategy 'nope'" in _events(parts, "error")[0]["message"]
    # The refused values do not linger: the next request on the thread starts from the defaults.
    parts = list(client.runs.stream(thread, "search", input={"budget": 4, "batch_size": 2}, stream_mode=STREAM))
    (finished,) = [e for e in _events(parts, "custom") if e.get("event") == "finished"]
    values = client.threads.get_state(thread)["values"]
    run = Workspace(server["home"] / "default-runs", table_path=table_path).run(values["run_id"])
    assert run.config.strategy == "rea" and values["evaluated"] == 4 and finished["stop_reason"] == "budget"
    assert "config" not in values  # the spec lives in the trial store, not in every checkpoint


def test_llm_strategies_in_the_server_none_and_an_endpoint_opened_lazily(client: Any, server: dict[str, Any],
                                                                          table_path: str) -> None:

    from fake_openai import FakeOpenAIServer, Reply
    from test_collm import STRATEGY, role_of

    runs = server["home"] / "llm-runs"
    # llm none: the LLM-free fallback runs the collm search.
    thread = client.threads.create()["thread_id"]
    parts = list(client.runs.stream(thread, "search", input={"strategy": "collm", "llm": "none", "budget": 3,
                                                             "batch_size": 3, "fallback": "random"},
                                    context={"runs_dir": str(runs)}, stream_mode=STREAM))
    assert not _events(parts, "error")
    config = Workspace(runs, table_path=table_path).run(client.threads.get_state(thread)["values"]["run_id"]).config
    assert config.llm == "none" and config.strategy == "collm"

    # llm endpoint: the server opens the roles itself (once per process and setting).
    counter = iter(range(10_000))

    def script(request: dict) -> Reply:
        if role_of(request) == "navigator":
            return Reply.text(json.dumps(STRATEGY))
        k = next(counter)
        return Reply.text(json.dumps({"codes": [f"3{(k * 2 + i) % 5}31{i % 4 + 1}2" for i in range(2)]}))

    with FakeOpenAIServer(default=Reply.dynamic(script)) as fake:
        request = {"strategy": "collm", "llm": "endpoint", "llm_base_url": fake.base_url, "llm_model": "fake-model",
                   "decoding": "text", "budget": 4, "batch_size": 2, "seed": 0}
        thread = client.threads.create()["thread_id"]
        parts = list(client.runs.stream(thread, "search", input=request, context={"runs_dir": str(runs)},
                                        stream_mode=STREAM))
        roles = [role_of(body) for body in fake.chat_bodies]
    assert not _events(parts, "error"), _events(parts, "error")
    rounds = [e for e in _events(parts, "custom") if e.get("event") == "round"]
    assert [r["summary"] for r in rounds] == [STRATEGY["summary"]] * 2 and rounds[-1]["evaluated"] == 4
    assert roles.count("navigator") == 2 and "generator" in roles
    assert all(body["model"] == "fake-model" for body in fake.chat_bodies)
    run_id = client.threads.get_state(thread)["values"]["run_id"]
    run = Workspace(runs, table_path=table_path).run(run_id)
    assert len(run.trials()) == 4 and run.llm_summary()["calls"] >= 4 and run.config.llm == "endpoint"


def test_the_servers_shutdown_closes_the_llm_clients_it_opened() -> None:
    """langgraph.json's http app: its lifespan ends the LLM clients (the local llama.cpp server) on
    shutdown, since after SIGTERM uvicorn re-raises the signal and atexit handlers never run."""
    import asyncio

    from collm_nas import studio, studio_app

    closed: list[str] = []
    studio.SERVER._llm_stack.callback(closed.append, "local model server stopped")

    async def serve() -> None:
        async with studio_app.lifespan(studio_app.app):
            assert closed == []

    asyncio.run(serve())
    assert closed == ["local model server stopped"]


def test_one_store_setting_governs_studio_and_the_cli(tmp_path_factory: pytest.TempPathFactory,
                                                       table_path: str) -> None:
    """With COLLM_NAS_STORE set, a run started in Studio lives in that store (not under the server's runs
    folder); the CLI lists it, shows its approval pause and answers it, through the server."""
    from langgraph_sdk import get_sync_client

    home = tmp_path_factory.mktemp("studio-store")
    team = home / "team" / "team.db"
    with _langgraph_dev(home, table_path, COLLM_NAS_STORE=str(team)) as running:
        client = get_sync_client(url=running["url"])
        thread = client.threads.create()["thread_id"]
        parts = list(client.runs.stream(thread, "search", input={"strategy": "random", "budget": 4, "batch_size": 2,
                                                                 "approval": "every_round", "run_id": "st"},
                                        context={"runs_dir": str(home / "elsewhere")}, stream_mode=STREAM))
        assert _pause(parts)["run_id"] == "st"
        assert team.is_file() and not (home / "elsewhere" / "collm-nas.db").exists()
        env = dict(os.environ, COLLM_NAS_STORE=str(team), COLLM_NAS_NB201_TABLE=table_path)

        def cli(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run([sys.executable, "-m", "collm_nas.cli", *args], env=env, capture_output=True,
                                  text=True, timeout=180)

        listed = json.loads(cli("runs", "--json").stdout)
        assert [(r["run_id"], r["status"]) for r in listed] == [("st", "awaiting approval")]
        shown = cli("approve", "st", "--json")
        assert shown.returncode == 0, shown.stderr
        pause = json.loads(shown.stdout)
        assert pause["round"] == 1 and len(pause["candidates"]) == 2
        refused = cli("approve", "st", "--decision", "edit", "--add", "000000")
        assert refused.returncode == 2 and "cannot add '000000'" in refused.stderr
        answered = cli("approve", "st", "--decision", "approve", "--json")
        assert answered.returncode == 0, answered.stderr
        assert client.threads.get(thread)["status"] == "interrupted"  # the server ran round 1, paused again
        second = json.loads(cli("approve", "st", "--json").stdout)
        assert second["round"] == 2 and second["evaluated"] == 2
        assert cli("approve", "st", "--decision", "approve").returncode == 0
        assert client.threads.get(thread)["status"] == "idle"
        again = cli("approve", "st", "--decision", "approve")
        assert again.returncode == 2 and "not waiting for approval" in again.stderr  # never applied twice
        run = Workspace(store=str(team), table_path=table_path).run("st")
        assert run.status == "finished" and len(run.trials()) == 4
        assert [r["human"]["action"] for r in run.rounds()] == ["approve", "approve"]
