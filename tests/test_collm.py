"""The CoLLM-NAS strategy against a real (fake) OpenAI-compatible HTTP server.

The server is scripted per request: requests whose system prompt is the
Navigator's get a strategy, the Generator's get codes. Everything else is
real: ChatOpenAI over HTTP, the LangGraph loop, the SQLite trial store.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from collm_nas import Workspace
from collm_nas.agents.collm import extract_codes
from collm_nas.llm.session import resolve_llm
from collm_nas.core.errors import UserError
from collm_nas.engine.figures import summarise_llm_rounds

from cli_runner import kill_when
from fake_openai import FakeOpenAIServer, Reply

ROOT = Path(__file__).resolve().parents[1]
SECRET = "sk-test-secret-4f1c9"

STRATEGY = {
    "summary": "keep 3x3 convolutions on most edges and try a skip on the last",
    "patterns": ["nor_conv_3x3 is strong"],
    "directions": {"edge_1<-0": {"prefer": ["nor_conv_3x3"], "avoid": ["none"]}},
    "constraints": [],
    "example_codes": ["333333"],
}


def role_of(request: dict) -> str:
    system = next((m.get("content") or "" for m in request.get("messages", []) if m.get("role") == "system"), "")
    return "navigator" if "Navigator" in system else "generator"


def is_correction(request: dict) -> bool:
    return any(m.get("role") == "assistant" for m in request.get("messages", []))


def last_user(request: dict) -> str:
    return [m for m in request["messages"] if m.get("role") == "user"][-1]["content"]


class Script:
    """Answers navigator requests with STRATEGY and generator requests with ``codes(request, k)``."""

    def __init__(self, codes: Callable[[dict, int], str]) -> None:
        self.codes = codes
        self.generator_calls = 0

    def __call__(self, request: dict) -> Reply:
        if role_of(request) == "navigator":
            return Reply.text(json.dumps(STRATEGY))
        self.generator_calls += 1
        return Reply.text(self.codes(request, self.generator_calls))


def fresh_codes(seed: int):
    """A generator that writes fresh legal-looking codes, wrapped in prose."""
    import random

    rng = random.Random(seed)

    def codes(request: dict, k: int) -> str:
        picks = ["".join(rng.choice("1234") for _ in range(6)) for _ in range(5)]
        return f"Sure! Following the strategy I suggest {', '.join(picks)}. Hope that helps."

    return codes


@pytest.fixture
def llm_env(monkeypatch: pytest.MonkeyPatch):
    """Point every role at a fake server (plain-text decoding, fast retries)."""

    def apply(server: FakeOpenAIServer, decoding: str = "text", **extra: str) -> None:
        monkeypatch.setenv("COLLM_NAS_LLM_BASE_URL", server.base_url)
        monkeypatch.setenv("COLLM_NAS_LLM_API_KEY", SECRET)
        monkeypatch.setenv("COLLM_NAS_LLM_MODEL", "fake-model")
        monkeypatch.setenv("COLLM_NAS_LLM_DECODING", decoding)
        monkeypatch.setenv("COLLM_NAS_LLM_TIMEOUT_S", "5")
        monkeypatch.setenv("COLLM_NAS_LLM_RETRY_MAX_ATTEMPTS", "3")
        monkeypatch.setenv("COLLM_NAS_LLM_RETRY_INITIAL_WAIT_S", "0.01")
        monkeypatch.setenv("COLLM_NAS_LLM_RETRY_MAX_WAIT_S", "0.05")
        monkeypatch.setenv("COLLM_NAS_LLM_RETRY_JITTER_S", "0")
        for key, value in extra.items():
            monkeypatch.setenv(key, value)

    yield apply


def search(tmp_path: Path, table_path: str, budget: int = 10, batch: int = 5, **kw):
    events: list[dict] = []
    ws = Workspace(tmp_path / "runs", table_path=table_path)
    result = ws.search(space="nb201", dataset="cifar10", strategy="collm", budget=budget, batch_size=batch,
                       seed=kw.pop("seed", 0), llm=kw.pop("llm", "endpoint"), run_id=kw.pop("run_id", "c"),
                       on_progress=events.append, **kw)
    return ws, result, events


def test_codes_in_prose_are_parsed_and_evaluated(tmp_path, table_path, llm_env):
    with FakeOpenAIServer(default=Reply.dynamic(Script(fresh_codes(1))), owned_by="openai") as server:
        llm_env(server)
        ws, result, events = search(tmp_path, table_path)
    assert result.evaluations == 10 and result.status == "finished"
    trials = ws.run("c").trials()
    assert len({t.ncode for t in trials}) == 10
    rounds = ws.run("c").rounds()
    assert rounds[0]["llm"]["modes"] == {"navigator": "text", "generator": "text"}
    assert rounds[0]["proposed"] == 5 and rounds[0]["accepted"] + rounds[0]["duplicates"] + rounds[0]["illegal"] == 5
    summary = ws.run("c").llm_summary()
    assert summary["calls"] >= 4 and summary["prompt_tokens"] > 0 and summary["completion_tokens"] > 0
    assert any(e.get("event") == "llm" for e in events)


def test_illegal_and_duplicate_codes_get_one_corrective_follow_up(tmp_path, table_path, llm_env):
    bad = '{"codes": ["33313", "3331329", "93313a", "000000", "333132", "333132"]}'
    good = '{"codes": ["333133", "233132", "133132", "333122"]}'

    def codes(request: dict, k: int) -> str:
        return good if is_correction(request) else bad

    with FakeOpenAIServer(default=Reply.dynamic(Script(codes))) as server:
        llm_env(server)
        ws, result, _ = search(tmp_path, table_path, budget=5, batch=5)
        correction = [b for b in server.chat_bodies if role_of(b) == "generator" and is_correction(b)]
    first = ws.run("c").rounds()[0]
    assert first["proposed"] == 10
    assert first["illegal"] == 4  # wrong length (x2), out-of-range character, degenerate cell
    assert first["duplicates"] == 1
    assert first["corrections"] == 1 and first["accepted"] == 5 and first["topped_up"] == 0
    assert len(correction) == 1
    text = last_user(correction[0])
    assert "33313" in text and "characters" in text and "000000" in text and "4 more" in text
    evaluated = {t.ncode for t in ws.run("c").trials()}
    assert evaluated == {"333132", "333133", "233132", "133132", "333122"}
    assert result.evaluations == 5


def test_empty_answers_are_topped_up_by_the_fallback(tmp_path, table_path, llm_env):
    with FakeOpenAIServer(default=Reply.dynamic(Script(lambda request, k: ""))) as server:
        llm_env(server)
        ws, result, _ = search(tmp_path, table_path, budget=10, batch=5)
    assert result.evaluations == 10
    for r in ws.run("c").rounds():
        assert r["accepted"] == 0 and r["topped_up"] == 5 and r["corrections"] == 0


def test_endpoint_failing_with_500_falls_back_and_says_so(tmp_path, table_path, llm_env):
    with FakeOpenAIServer(default=Reply.error(500)) as server:
        llm_env(server)
        ws, result, events = search(tmp_path, table_path, budget=20, batch=2)
        requests = len(server.chat_requests)
    assert result.evaluations == 20 and result.status == "finished"
    warnings = [e["message"] for e in events if e.get("event") == "warning"]
    assert warnings and "500" in warnings[0] and "LLM-free" in warnings[0] and "\n" not in warnings[0]
    # After a failure the LLM is left alone for a few rounds: far fewer requests than rounds x attempts.
    assert requests < 10 * 3
    summary = ws.run("c").llm_summary()
    assert summary["fallback_rounds"] == summary["rounds"] == 10 and summary["topped_up"] == 20


def test_429_and_a_timeout_are_retried(tmp_path, table_path, llm_env):
    script = Script(fresh_codes(2))
    with FakeOpenAIServer(default=Reply.dynamic(script)) as server:
        server.push(Reply.error(429, headers={"Retry-After": "1"}))  # the first navigator call
        llm_env(server, COLLM_NAS_LLM_TIMEOUT_S="0.5", COLLM_NAS_LLM_RETRY_MAX_WAIT_S="2")
        server.push(Reply.dynamic(lambda r: Reply.text(json.dumps(STRATEGY), delay=2.0)))  # times out
        started = time.monotonic()
        ws, result, events = search(tmp_path, table_path, budget=5, batch=5)
        elapsed = time.monotonic() - started
    assert result.evaluations == 5
    assert ws.run("c").rounds()[0]["llm"]["failed_calls"] == 0
    assert elapsed >= 1.0  # Retry-After was honoured
    assert not [e for e in events if e.get("event") == "warning"]


def test_grammar_mode_sends_a_grammar_of_unseen_legal_codes(tmp_path, table_path, llm_env):
    with FakeOpenAIServer(default=Reply.dynamic(Script(fresh_codes(3))), owned_by="llamacpp") as server:
        llm_env(server, decoding="auto")
        ws, result, _ = search(tmp_path, table_path, budget=10, batch=5)
        generator_bodies = [b for b in server.chat_bodies if role_of(b) == "generator"]
    assert result.evaluations == 10
    assert all("grammar" in b and "max_tokens" in b for b in generator_bodies)
    assert ws.run("c").rounds()[0]["llm"]["modes"]["generator"] == "grammar"


def test_grammar_leaves_the_avoid_list_out_and_the_calls_are_counted_per_role(tmp_path, table_path, llm_env):
    with FakeOpenAIServer(default=Reply.dynamic(Script(fresh_codes(3))), owned_by="llamacpp") as server:
        llm_env(server, decoding="auto")
        ws, result, _ = search(tmp_path, table_path, budget=10, batch=5)
        generator_bodies = [b for b in server.chat_bodies if role_of(b) == "generator"]
    first_round = [t.ncode for t in ws.run("c").trials() if t.round == 1]
    second_prompt = generator_bodies[1]["messages"][-1]["content"]
    # The grammar admits only unseen codes, so the prompt does not list the evaluated ones.
    assert "the decoder admits only codes that are legal and not yet evaluated" in second_prompt
    assert not any(code in second_prompt for code in first_round), second_prompt
    rounds = ws.run("c").rounds()
    by_role = summarise_llm_rounds(rounds)["by_role"]
    assert by_role["generator"]["calls"] == len(generator_bodies) == 2
    assert by_role["navigator"]["calls"] == 2
    assert by_role["generator"]["prompt_tokens"] == sum(r["llm"]["prompt_tokens_by_role"]["generator"] for r in rounds)
    assert by_role["generator"]["per_call"]["prompt_tokens"] == by_role["generator"]["prompt_tokens"] / 2 > 0


def test_the_navigator_can_plan_every_other_round(tmp_path, table_path, llm_env):
    with FakeOpenAIServer(default=Reply.dynamic(Script(fresh_codes(5)))) as server:
        llm_env(server)
        ws, result, _ = search(tmp_path, table_path, budget=25, batch=5, navigate_every=2)
        roles = [role_of(b) for b in server.chat_bodies if not is_correction(b)]
    assert result.evaluations == 25
    assert roles.count("navigator") == 3 and roles.count("generator") == 5, roles  # rounds 1, 3, 5 plan
    rounds = ws.run("c").rounds()
    assert [sorted(r["llm"]["by_role"]) for r in rounds] == [["generator", "navigator"], ["generator"]] * 2 + [
        ["generator", "navigator"]]
    assert rounds[1]["strategy"] == rounds[0]["strategy"] and rounds[3]["strategy"] == rounds[2]["strategy"]
    assert ws.run("c").config.navigate_every == 2


def test_api_key_is_never_written(tmp_path, table_path, llm_env):
    with FakeOpenAIServer(default=Reply.dynamic(Script(fresh_codes(4)))) as server:
        llm_env(server)
        ws, result, _ = search(tmp_path, table_path, budget=5, batch=5)
        assert server.chat_requests[0].headers["authorization"] == f"Bearer {SECRET}"
    for path in (tmp_path / "runs").rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), f"API key found in {path}"


@pytest.mark.e2e
def test_navigator_prompt_stays_flat_as_history_grows(tmp_path, table_path, llm_env):
    with FakeOpenAIServer(default=Reply.dynamic(Script(fresh_codes(5)))) as server:
        llm_env(server)
        ws, result, _ = search(tmp_path, table_path, budget=60, batch=2)
    tokens = {r["round"]: r["llm"]["prompt_tokens_by_role"]["navigator"] for r in ws.run("c").rounds()}
    assert tokens[30] <= 1.5 * tokens[2], tokens


def test_patience_stops_a_search_without_improvement(tmp_path, table_path, llm_env):
    ws = Workspace(tmp_path / "runs", table_path=table_path)
    result = ws.search(dataset="cifar10", strategy="random", budget=500, seed=0, patience=5, run_id="p")
    assert result.stop_reason == "no_improvement" and result.evaluations < 500
    rounds = ws.run("p").rounds()
    best_round = ws.run("p").best().round
    assert len(rounds) == best_round + 5


def test_without_any_llm_the_fallback_runs_and_says_so(tmp_path, table_path, monkeypatch):
    for key in list(os.environ):
        if key.startswith(("COLLM_NAS_LLM_", "OPENAI_")):
            monkeypatch.delenv(key)
    monkeypatch.setattr("collm_nas.llm.session.local_model_available", lambda: False)
    source, note = resolve_llm("auto", environ={})
    assert source == "none" and "without an LLM" in note and "\n" not in note
    with pytest.raises(UserError, match="COLLM_NAS_LLM_BASE_URL"):
        resolve_llm("endpoint", environ={})
    ws = Workspace(tmp_path / "runs", table_path=table_path)
    events: list[dict] = []
    result = ws.search(strategy="collm", budget=12, llm="none", run_id="n", on_progress=events.append)
    assert result.evaluations == 12
    assert ws.run("n").llm_summary() is None  # the LLM-free fallback ran


def test_extract_codes_is_tolerant():
    assert extract_codes("Try 333132 and then 12a, not Model7.") == ["333132", "12a"]
    assert extract_codes('```json\n{"codes": ["1", "22"]}\n```') == ["1", "22"]
    assert extract_codes("no codes here") == []
    assert extract_codes("codes: 1234567, 33313") == ["1234567", "33313"]


# --------------------------------------------------------------- real processes
def _env(tmp_path: Path, table_path: str, server: FakeOpenAIServer, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COLLM_NAS_LLM_", "OPENAI_"))}
    env.update(COLLM_NAS_RUNS_DIR=str(tmp_path / "runs"), COLLM_NAS_NB201_TABLE=table_path,
               COLLM_NAS_LLM_BASE_URL=server.base_url, COLLM_NAS_LLM_API_KEY=SECRET,
               COLLM_NAS_LLM_MODEL="fake-model", COLLM_NAS_LLM_DECODING="text",
               COLLM_NAS_LLM_RETRY_INITIAL_WAIT_S="0.01", COLLM_NAS_LLM_RETRY_MAX_WAIT_S="0.05",
               COLLM_NAS_LLM_TIMEOUT_S="120", PYTHONPATH=str(ROOT / "tests"), **extra)
    return env


def _cli(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "collm_nas.cli", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


def _trials(db: Path, run_id: str) -> dict[str, tuple]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT ncode, seq, value FROM trials WHERE run_id = ?", (run_id,)).fetchall()
    return {r[0]: (r[1], r[2]) for r in rows}


@pytest.mark.e2e
def test_401_is_a_one_line_error_and_the_run_stays_resumable(tmp_path, table_path):
    with FakeOpenAIServer(default=Reply.error(401, body={"error": {"message": "Incorrect API key"}})) as server:
        env = _env(tmp_path, table_path, server)
        args = ["search", "--strategy", "collm", "--llm", "endpoint", "--budget", "10", "--batch-size", "5",
                "--run-id", "auth", "--json"]
        failed = _cli(args, env)
        assert failed.returncode == 2
        lines = failed.stderr.strip().splitlines()
        assert "Traceback" not in failed.stderr
        assert lines[-1].startswith("collm-nas: error:") and "API_KEY" in lines[-1] and "401" in lines[-1]
        assert len(server.chat_requests) == 1  # not retried
        listed = json.loads(_cli(["runs", "--json"], env).stdout)
        assert listed[0]["run_id"] == "auth" and listed[0]["status"] == "interrupted (resumable)"
        server.default = Reply.dynamic(Script(fresh_codes(6)))  # the key is fixed
        resumed = _cli(["resume", "auth", "--json"], env)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["evaluations"] == 10


@pytest.mark.e2e
@pytest.mark.parametrize("strategy", ["collm", "hybrid"])
def test_sigkill_during_an_llm_call_then_resume_loses_and_repeats_nothing(tmp_path, table_path, strategy):
    """Killed while the Navigator's call of round 3 hangs (the fake server holds it: the test waits for that
    request to arrive, an event, then kills): rounds 1 and 2 are kept, 8 trials; nothing repeats on resume."""
    script = Script(fresh_codes(7))
    state = {"hang": True, "navigator": 0}

    def answer(request: dict) -> Reply:
        reply = script(request)
        if role_of(request) == "navigator":
            state["navigator"] += 1
            if state["hang"] and state["navigator"] == 3:
                reply.delay = 120.0  # round 3's strategy never comes
        return reply

    db = tmp_path / "runs" / "collm-nas.db"
    with FakeOpenAIServer(default=Reply.dynamic(answer)) as server:
        env = _env(tmp_path, table_path, server)
        args = ["search", "--strategy", strategy, "--llm", "endpoint", "--budget", "20", "--batch-size", "4",
                "--run-id", "k", "--json"]
        proc = subprocess.Popen([sys.executable, "-m", "collm_nas.cli", *args], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        kill_when(proc, lambda: state["navigator"] >= 3)
        before = _trials(db, "k")
        assert len(before) == 8  # rounds 1 and 2, four each
        state["hang"] = False
        resumed = _cli(["resume", "k", "--json"], env)
    assert resumed.returncode == 0, resumed.stderr
    after = _trials(db, "k")
    assert json.loads(resumed.stdout)["evaluations"] == 20 == len(after)
    assert all(after[code] == row for code, row in before.items()), "a recorded trial was lost or changed"
