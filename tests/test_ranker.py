"""The LLM ranker over real HTTP to the fake OpenAI-compatible server."""

from __future__ import annotations

import json
import random

import pytest
from fake_openai import FakeOpenAIServer, Reply

from collm_nas.llm.chat_models import LLMUnavailable, RetryPolicy, RoleModelConfig
from collm_nas.core import Trial
from collm_nas.llm.structured import StructuredChat
from collm_nas.spaces import SPACES
from collm_nas.tools.grammar import pick_gbnf
from collm_nas.agents.ranker import LLMRanker, RankOutcome, history_lines, make_rank_tool, parse_pick

FAST = RetryPolicy(max_attempts=2, initial_wait_s=0.01, max_wait_s=0.05, max_total_s=5.0, jitter_s=0.0)
POOL = ["123412", "333333", "204130"]
NEW_POOL = ["441122", "232323", "313131"]


@pytest.fixture(scope="module")
def space():
    return SPACES.resolve("nb201")


def chat_for(server: FakeOpenAIServer, decoding: str = "text") -> StructuredChat:
    cfg = RoleModelConfig(role="ranker", base_url=server.base_url, model="fake-model", timeout_s=5,
                          retry=FAST, decoding=decoding)
    return StructuredChat(cfg)


def trial(seq: int, ncode: str, value: float | None, status: str = "ok") -> Trial:
    return Trial(seq=seq, ncode=ncode, arch=ncode, round=seq // 5, status=status, value=value)


TRIALS = [trial(0, "111111", 80.0), trial(1, "222222", 90.0), trial(2, "000001", None, "failed"),
          trial(3, "444444", 70.0)]


def user_text(body: dict) -> str:
    return [m for m in body["messages"] if m.get("role") == "user"][-1]["content"]


def system_text(body: dict) -> str:
    return next(m["content"] for m in body["messages"] if m.get("role") == "system")


def pool_in(body: dict) -> list[str]:
    """The codes listed under the pool heading of a request."""
    section = user_text(body).split("## Candidate pool", 1)[1].split("\n\n", 1)[0]
    return [line.strip() for line in section.splitlines()[1:] if line.strip()]


class Redraw:
    def __init__(self, *pools: list[str]) -> None:
        self.pools = list(pools)
        self.calls = 0

    def __call__(self) -> list[str]:
        self.calls += 1
        return list(self.pools[min(self.calls, len(self.pools)) - 1])


# --------------------------------------------------------------------------- picking
def test_answer_in_pool_is_accepted(space):
    with FakeOpenAIServer([Reply.text('{"code": "333333"}')]) as server:
        out = LLMRanker().pick(chat_for(server), space, TRIALS, POOL, metric="cifar10_valid")
        bodies = server.chat_bodies
    assert isinstance(out, RankOutcome)
    assert out.code == "333333" and out.ok
    assert (out.attempts, out.outside_pool, out.unparsed, out.pool) == (1, 0, 0, POOL)
    assert len(bodies) == 1
    call = out.calls[0]
    assert call["ok"] and call["role"] == "ranker" and call["mode"] == "text" and call["error"] is None
    assert call["prompt_tokens"] > 0 and call["completion_tokens"] > 0 and call["latency_s"] >= 0
    # The prompt: the space and NCode in the system message, history and pool in the user message.
    system, user = system_text(bodies[0]), user_text(bodies[0])
    assert "NCode" in system and space.describe() in system and "cifar10_valid" in system
    assert "222222|1.000" in user and "444444|0.000" in user and "000001" not in user
    assert pool_in(bodies[0]) == POOL
    assert "$" not in system + user  # every template field was filled


def test_answer_outside_pool_triggers_a_redraw(space):
    redraw = Redraw(NEW_POOL)
    with FakeOpenAIServer([Reply.text('{"code": "444444"}'), Reply.text('{"code": "232323"}')]) as server:
        calls: list[dict] = []
        out = LLMRanker().pick(chat_for(server), space, TRIALS, POOL, redraw=redraw, calls=calls)
        bodies = server.chat_bodies
    assert out.code == "232323"
    assert out.outside_pool == 1 and out.attempts == 2 and redraw.calls == 1
    assert out.pool == NEW_POOL
    assert [pool_in(b) for b in bodies] == [POOL, NEW_POOL]
    assert [c["ok"] for c in out.calls] == [False, True] and calls == out.calls
    assert "not in the pool" in out.calls[0]["error"]


def test_all_answers_outside_the_pool_give_none(space):
    redraw = Redraw(NEW_POOL, ["121212", "343434"])
    with FakeOpenAIServer(default=Reply.text('{"code": "000000"}')) as server:
        out = LLMRanker().pick(chat_for(server), space, TRIALS, POOL, redraw=redraw, max_redraws=2)
        n_requests = len(server.chat_bodies)
    assert out.code is None and not out.ok
    assert out.attempts == n_requests == 3 and out.outside_pool == 3 and redraw.calls == 2
    assert out.pool == ["121212", "343434"]
    assert not any(c["ok"] for c in out.calls)


def test_unparsable_answer_and_no_redraw_asks_the_same_pool_again(space):
    replies = [Reply.text("I am not sure, they all look fine."), Reply.text("")]
    with FakeOpenAIServer(replies, default=Reply.text('{"code": "204130"}')) as server:
        out = LLMRanker().pick(chat_for(server), space, TRIALS, POOL)
        bodies = server.chat_bodies
    assert out.code == "204130" and out.unparsed == 2 and out.outside_pool == 0 and out.attempts == 3
    assert [pool_in(b) for b in bodies] == [POOL] * 3


def test_empty_redraw_ends_the_pick(space):
    with FakeOpenAIServer(default=Reply.text('{"code": "000000"}')) as server:
        out = LLMRanker().pick(chat_for(server), space, TRIALS, POOL, redraw=lambda: [])
        assert len(server.chat_bodies) == 1
    assert out.code is None and out.attempts == 1 and out.pool == []


def test_prose_answer_is_parsed_in_text_mode(space):
    prose = ("Looking at the history, 222222 did best, so I would go with 123412 because it keeps "
             "its convolutions; 333333 is a close second.")
    with FakeOpenAIServer([Reply.text(prose)]) as server:
        out = LLMRanker().pick(chat_for(server, "text"), space, TRIALS, POOL)
    assert out.code == "123412" and out.attempts == 1


def test_parse_pick_needs_whole_words():
    parse = parse_pick(POOL)
    assert parse("x1234123 and 3333339") is None
    assert parse("Pick: 333333.").code == "333333"
    # A JSON answer is taken at its word, even outside the pool.
    assert parse('sure: {"code": "000000"} not 333333').code == "000000"


def test_grammar_mode_sends_the_pool_grammar(space):
    answer = '{"code": "204130"}'
    with FakeOpenAIServer([Reply.text(answer)], owned_by="llamacpp") as server:
        out = LLMRanker().pick(chat_for(server, "auto"), space, TRIALS, POOL)
        body = server.chat_bodies[0]
    assert out.code == "204130" and out.calls[0]["mode"] == "grammar"
    assert body["grammar"] == pick_gbnf(POOL)


def test_grammar_follows_the_redrawn_pool(space):
    replies = [Reply.text('{"code": "999999"}'), Reply.text('{"code": "441122"}')]
    with FakeOpenAIServer(replies) as server:
        out = LLMRanker().pick(chat_for(server, "grammar"), space, TRIALS, POOL, redraw=Redraw(NEW_POOL))
        bodies = server.chat_bodies
    assert out.code == "441122" and out.outside_pool == 1
    assert [b["grammar"] for b in bodies] == [pick_gbnf(POOL), pick_gbnf(NEW_POOL)]


def test_json_schema_mode_sends_the_pool_as_an_enum(space):
    with FakeOpenAIServer([Reply.text('{"code": "123412"}')], owned_by="vllm") as server:
        out = LLMRanker().pick(chat_for(server, "auto"), space, TRIALS, POOL)
        body = server.chat_bodies[0]
    assert out.code == "123412" and out.calls[0]["mode"] == "json_schema"
    assert body["guided_json"]["properties"]["code"]["enum"] == POOL


def test_unavailable_llm_propagates_and_is_recorded(space):
    calls: list[dict] = []
    with FakeOpenAIServer(default=Reply.error(503)) as server:
        with pytest.raises(LLMUnavailable):
            LLMRanker().pick(chat_for(server), space, TRIALS, POOL, calls=calls)
    assert len(calls) == 1 and calls[0]["ok"] is False and calls[0]["error"]


def test_rank_tool_picks_from_a_drawn_pool(space):
    with FakeOpenAIServer([Reply.text('{"code": "232323"}')]) as server:
        tool = make_rank_tool(chat_for(server), space, lambda: TRIALS, lambda: list(NEW_POOL))
        result = json.loads(tool.invoke({"pool": []}))
        assert pool_in(server.chat_bodies[0]) == NEW_POOL
    assert result == {"code": "232323", "pool_size": 3, "attempts": 1, "outside_pool": 0}


# --------------------------------------------------------------------------- history
def rewards(text: str) -> list[tuple[str, float]]:
    return [(code, float(r)) for code, r in (line.split("|") for line in text.splitlines())]


def test_history_lines_are_bounded_and_normalised():
    rng = random.Random(0)
    trials = [trial(i, f"{i:06d}", rng.uniform(10, 95)) for i in range(1000)]
    text = history_lines(trials, "max", top_k=20, recent=10)
    lines = rewards(text)
    assert len(lines) == 30
    values = {t.ncode: t.value for t in trials}
    shown = [values[c] for c, _ in lines]
    assert shown == sorted(shown, reverse=True)  # best first
    assert lines[0][1] == 1.0 and lines[-1][1] == 0.0
    assert all(0.0 <= r <= 1.0 for _, r in lines)
    best20 = sorted(trials, key=lambda t: -t.value)[:20]
    assert {t.ncode for t in best20} <= {c for c, _ in lines}
    # The ten others are the most recent trials outside the top 20.
    recent = [t.ncode for t in trials if t.ncode not in {b.ncode for b in best20}][-10:]
    assert set(recent) <= {c for c, _ in lines}
    # The prompt stays flat as the history grows.
    assert len(history_lines(trials[:100], "max").splitlines()) == len(lines)


def test_history_lines_minimisation_and_edge_cases():
    trials = [trial(0, "111111", 3.0), trial(1, "222222", 1.0), trial(2, "333333", 2.0),
              trial(3, "444444", None, "failed")]
    assert rewards(history_lines(trials, "min")) == [("222222", 1.0), ("333333", 0.5), ("111111", 0.0)]
    assert rewards(history_lines(trials, "max")) == [("111111", 1.0), ("333333", 0.5), ("222222", 0.0)]
    assert rewards(history_lines(trials[:1], "max")) == [("111111", 1.0)]
    assert rewards(history_lines(trials, "max", top_k=1, recent=1)) == [("111111", 1.0), ("333333", 0.0)]
    assert history_lines([], "max") == history_lines(trials[3:], "max") == "(nothing measured yet)"
    with pytest.raises(ValueError):
        history_lines(trials, "maximise")
