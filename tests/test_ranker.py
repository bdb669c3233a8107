"""The LLM ranker over real HTTP to the fake OpenAI-compatible server."""

from __future__ import annotations

import json
import math
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


# --------------------------------------------------------------------------- logprob scoring
def options_in(body: dict) -> list[str]:
    """The lettered options of a logprob question, as codes in the order shown."""
    section = user_text(body).split("## Candidate pool", 1)[1].split("\n\n", 1)[0]
    rows = [line.strip() for line in section.splitlines()[1:] if line.strip()]
    assert [r.split(". ")[0] for r in rows] == list("ABCDEFGHIJ"[: len(rows)])
    return [r.split(". ", 1)[1] for r in rows]


def test_label_logprobs_renormalise_and_add_spellings():
    from collm_nas.llm.structured import label_logprobs

    got = label_logprobs([{"token": "A", "logprob": math.log(0.5)}, {"token": " A", "logprob": math.log(0.1)},
                          {"token": "B", "logprob": math.log(0.2)}, {"token": "The", "logprob": math.log(0.1)}],
                         ["A", "B", "C"])
    probs = {k: math.exp(v) for k, v in got.items()}
    # C is unlisted: half the smallest listed probability (0.1 / 2), then all three renormalised.
    assert probs["A"] == pytest.approx(0.6 / 0.85) and probs["B"] == pytest.approx(0.2 / 0.85)
    assert probs["C"] == pytest.approx(0.05 / 0.85)
    assert label_logprobs([{"token": "The", "logprob": -0.1}], ["A", "B"]) is None


def test_choice_orders_put_every_candidate_in_different_places():
    from collm_nas.agents.ranker import choice_orders

    pool = ["a", "b", "c", "d", "e"]
    orders = choice_orders(pool, 5)
    assert len(orders) == 5 and all(sorted(o) == pool for o in orders)
    for code in pool:  # a Latin square: each candidate once in each place
        assert sorted(o.index(code) for o in orders) == [0, 1, 2, 3, 4]
    assert choice_orders(pool, 1) == [pool]
    assert len(choice_orders(pool, 9)) == 5  # never more orders than places
    three = choice_orders(pool, 3)
    assert len({tuple(o) for o in three}) == 3
    assert all(len({o.index(c) for o in three}) == 3 for c in pool)


def test_logprob_scoring_averages_out_position_bias(space):
    """A model that always favours the first place, and slightly favours code 333333 wherever it stands: the
    mean over the orders picks 333333, though three of the four orders favour another code."""
    pool = ["123412", "333333", "204130", "441122"]

    def answer(body: dict) -> Reply:
        shown = options_in(body)
        top = {}
        for place, code in enumerate(shown):
            p = 0.6 if place == 0 else 0.1
            p += 0.08 if code == "333333" else 0.0
            top["ABCD"[place]] = math.log(p)
        return Reply.choice("A", top)

    with FakeOpenAIServer([Reply.dynamic(answer)] * 4) as server:
        out = LLMRanker(scoring="logprob", orders=4).pick(chat_for(server), space, TRIALS, pool,
                                                           metric="cifar10_valid")
        bodies = server.chat_bodies
    assert out.code == "333333" and out.note is None
    assert len(bodies) == 4 and out.attempts == 4
    assert {tuple(options_in(b)) for b in bodies} == {tuple(pool[s:] + pool[:s]) for s in range(4)}
    for body in bodies:  # one token, its alternatives asked for
        assert body["logprobs"] is True and body["top_logprobs"] == 20 and body["max_tokens"] == 1
        assert "letter" in system_text(body) and '{"code"' not in system_text(body)
    assert sum(out.scores.values()) == pytest.approx(1.0)
    assert max(out.scores, key=out.scores.get) == "333333"
    assert [c["mode"] for c in out.calls] == ["logprob"] * 4 and all(c["ok"] for c in out.calls)
    assert [c["order"] for c in out.calls] == [0, 1, 2, 3]


def test_logprob_scoring_with_grammar_holds_the_token_to_the_letters(space):
    top = {"A": math.log(0.2), "B": math.log(0.7), "C": math.log(0.1)}
    with FakeOpenAIServer([Reply.choice("B", top)] * 3) as server:
        out = LLMRanker(scoring="logprob", orders=1).pick(chat_for(server, "grammar"), space, TRIALS, POOL)
        body = server.chat_bodies[0]
    assert body["grammar"] == 'root ::= "A" | "B" | "C"'
    assert out.code == options_in(body)[1] == POOL[1]


def test_endpoint_without_logprobs_falls_back_to_a_pick_and_says_so(space):
    """A plain text answer has no logprobs block: the ranker picks the usual way, says so in its note, and
    does not ask for log-probabilities again on that chat."""
    with FakeOpenAIServer([Reply.text("A"), Reply.text('{"code": "204130"}'), Reply.text('{"code": "123412"}')]
                          ) as server:
        chat = chat_for(server)
        ranker = LLMRanker(scoring="logprob", orders=3)
        first = ranker.pick(chat, space, TRIALS, POOL)
        second = ranker.pick(chat, space, TRIALS, POOL)
        bodies = server.chat_bodies
    assert first.code == "204130" and "no log-probabilities" in first.note and "picks instead" in first.note
    assert [c["mode"] for c in first.calls] == ["logprob", "text"] and not first.calls[0]["ok"]
    assert second.code == "123412" and "picks instead" in second.note
    assert len(bodies) == 3 and "logprobs" not in bodies[2]


def test_logprob_scoring_unavailable_server_propagates_after_recording(space):
    with FakeOpenAIServer([Reply.error(503)] * 4) as server:
        calls: list[dict] = []
        with pytest.raises(LLMUnavailable):
            LLMRanker(scoring="logprob").pick(chat_for(server), space, TRIALS, POOL, calls=calls)
    assert len(calls) == 1 and calls[0]["mode"] == "logprob" and not calls[0]["ok"]


def test_pick_scoring_prompt_is_unchanged(space):
    """The default (pick) still asks for a JSON code: the system prompt's answer line is the pick one."""
    from collm_nas.agents.ranker import PICK_ANSWER

    system = LLMRanker().messages(space, TRIALS, POOL)[0].content
    assert system.endswith(PICK_ANSWER)


def test_server_route_reads_each_label_spelling_from_the_logits():
    """The server side of a local model's choice: log-softmax of the next-token logits at each one-token
    spelling of a label; a spelling of two tokens is no answer of one token and is left out."""
    import numpy as np

    from collm_nas.llm.llama_server import label_alternatives

    logits = np.array([2.0, 1.0, 0.0, -1.0, 0.5, 3.0])
    vocab = {"A": [0], " A": [3], "B": [1], " B": [4, 2], "C": [5], " C": [9]}
    got = label_alternatives(logits, ["A", "B", "C"], lambda text: vocab[text])
    log_total = math.log(sum(math.exp(x) for x in logits))
    assert [g["token"] for g in got] == ["A", " A", "B", "C"]  # " B" is two tokens; id 9 is outside the vocabulary
    assert [g["logprob"] for g in got] == pytest.approx([2.0 - log_total, -1.0 - log_total, 1.0 - log_total,
                                                         3.0 - log_total])
