"""The LLM's own knowledge as the learned ranker's prior (``--prior llm``): the questions, the scores read from
log-probabilities with the position bias cancelled, a real search whose first pick is the model's favourite,
a run that keeps the answer across a stop and resume, and the one-line refusals."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from collm_nas import Workspace
from collm_nas.agents.llm_prior import NoPreferences, OptionPreferences, ask_preferences, option_groups
from collm_nas.core.errors import UserError
from collm_nas.llm.chat_models import RetryPolicy, RoleModelConfig
from collm_nas.llm.structured import StructuredChat
from collm_nas.spaces.nb201 import OPERATION_TEXT, OPERATIONS, NB201Space

from fake_openai import FakeOpenAIServer, Reply

# What the fake model believes, best first; it also leans to the first-listed letter.
BELIEF = ["nor_conv_3x3", "nor_conv_1x1", "skip_connect", "avg_pool_3x3", "none"]
FIRST_BIAS = 1.5


def _is_prior_question(body: dict) -> bool:
    return any(m.get("role") == "system" and "neural network design" in m["content"] for m in body["messages"])


def _options_asked(body: dict) -> tuple[str, str]:
    user = [m for m in body["messages"] if m.get("role") == "user"][-1]["content"]
    by_text = {text: op for op, text in OPERATION_TEXT.items()}
    a = next(line[3:] for line in user.splitlines() if line.startswith("A: "))
    b = next(line[3:] for line in user.splitlines() if line.startswith("B: "))
    return by_text[a], by_text[b]


def believer(body: dict) -> Reply:
    """Prefers the option higher in BELIEF, and the first-listed one by FIRST_BIAS (in logits)."""
    a, b = _options_asked(body)
    logit = (BELIEF.index(b) - BELIEF.index(a)) * 0.5 + FIRST_BIAS
    pa = 1 / (1 + math.exp(-logit))
    return Reply.choice("A" if pa >= 0.5 else "B", {"A": math.log(pa), "B": math.log(1 - pa)})


def chat_for(server: FakeOpenAIServer) -> StructuredChat:
    cfg = RoleModelConfig(role="ranker", base_url=server.base_url, model="fake-model", timeout_s=5,
                          retry=RetryPolicy(max_attempts=1, initial_wait_s=0.01, max_wait_s=0.05, max_total_s=5.0,
                                            jitter_s=0.0), decoding="text")
    return StructuredChat(cfg)


def test_every_pair_is_asked_both_ways_and_the_first_place_bias_cancels() -> None:
    space = NB201Space()
    assert [g.positions for g in option_groups(space)] == [(0, 1, 2, 3, 4, 5)]  # six edges, one set of questions
    with FakeOpenAIServer(default=Reply.dynamic(believer)) as server:
        prefs = ask_preferences(chat_for(server), space, "cifar10_valid")
        bodies = server.chat_bodies
    asked = [_options_asked(b) for b in bodies]
    assert len(asked) == 20 == len(set(asked))  # every ordered pair of the five operations, once
    assert all((b, a) in asked for a, b in asked)
    assert all("higher cifar10_valid" in b["messages"][-1]["content"] for b in bodies)
    # The model says "A" to most questions (first_listed well above a half), yet the order comes out right.
    assert prefs.first_listed > 0.7
    assert prefs.ranking(0) == BELIEF and all(s == prefs.scores[0] for s in prefs.scores)
    assert sum(prefs.scores[0].values()) == pytest.approx(len(OPERATIONS) / 2)
    assert len(prefs.calls) == 20 and all(c["ok"] and c["kind"] == "prior" for c in prefs.calls)
    # A code's value: its network's operations; a dead edge (300300's first) counts as a cut one.
    v = dict(zip(["333333", "222222", "000300", "300300", "111111"],
                 prefs.values(space, ["333333", "222222", "000300", "300300", "111111"])))
    assert v["333333"] > v["222222"] > v["111111"] and v["000300"] == v["300300"]
    assert OptionPreferences.from_dict(prefs.to_dict()).values(space, ["333333"]) == [v["333333"]]


def test_an_endpoint_without_log_probabilities_gives_no_preferences() -> None:
    with FakeOpenAIServer(default=Reply.text("A")) as server:
        with pytest.raises(NoPreferences, match="log-probabilities") as caught:
            ask_preferences(chat_for(server), NB201Space(), "cifar10_valid")
    assert len(caught.value.calls) == 1 and not caught.value.calls[0]["ok"]


@pytest.fixture
def ws(tmp_path: Path, table_path: str) -> Workspace:
    yield Workspace(tmp_path / "runs", table_path=table_path)


def test_a_search_ranks_by_the_models_knowledge_from_its_first_round(ws: Workspace, monkeypatch) -> None:
    with FakeOpenAIServer(default=Reply.dynamic(believer)) as server:
        monkeypatch.setenv("COLLM_NAS_LLM_BASE_URL", server.base_url)
        monkeypatch.setenv("COLLM_NAS_LLM_DECODING", "text")
        result = ws.search(dataset="cifar10", strategy="lmsearcher", llm="endpoint", prior=["llm"],
                           ranker_pool="none", budget=12, seed=0, run_id="known")
        bodies = server.chat_bodies
    assert result.evaluations == 12 and result.degraded is None
    assert len(bodies) == 20 and all(_is_prior_question(b) for b in bodies)  # asked once, nothing else
    run = ws.run("known")
    trials = run.trials()
    assert trials[0].ncode == "333333"  # the favourite of a model that puts 3x3 convolutions first
    assert trials[0].round == 1 and len({t.round for t in trials}) == 12  # ranked from round 1, no random phase
    rounds = run.rounds()
    assert rounds[0]["llm"]["calls"] == 20 and all(r["llm"]["calls"] == 0 for r in rounds[1:])
    summary = run.llm_summary()
    assert (summary["llm_rounds"], summary["wanted_rounds"], summary["fallback_rounds"]) == (1, 1, 0)
    assert "nor_conv_3x3 > nor_conv_1x1 > skip_connect > avg_pool_3x3 > none" in rounds[0]["strategy"]


def test_a_cold_run_and_the_same_run_with_a_silent_model_pick_alike_and_the_second_says_so(
        ws: Workspace, monkeypatch) -> None:
    """An endpoint that returns no log-probabilities: the run goes on without the prior (the learned ranker's
    cold start) and says that the LLM answered none of the rounds meant for it."""
    cold = ws.search(dataset="cifar10", strategy="lmsearcher", llm="none", budget=12, seed=4, run_id="cold")
    events: list[dict] = []
    with FakeOpenAIServer(default=Reply.text("A")) as server:
        monkeypatch.setenv("COLLM_NAS_LLM_BASE_URL", server.base_url)
        monkeypatch.setenv("COLLM_NAS_LLM_DECODING", "text")
        silent = ws.search(dataset="cifar10", strategy="lmsearcher", llm="endpoint", prior=["llm"],
                           ranker_pool="none", budget=12, seed=4, run_id="silent", on_progress=events.append)
        asked = len(server.chat_bodies)
    assert asked == 1  # the first question got no log-probabilities: no more are asked, now or later
    assert [t.ncode for t in ws.run("silent").trials()] == [t.ncode for t in ws.run("cold").trials()]
    assert cold.degraded is None and silent.degraded and "never answered" in silent.degraded
    warnings = [e["message"] for e in events if e.get("event") == "warning"]
    assert len(warnings) == 1 and "the LLM's prior (--prior llm) is missing" in warnings[0]


def test_a_stopped_run_resumes_with_the_answer_it_was_given(ws: Workspace, monkeypatch) -> None:
    """The prior is asked in round 1 and kept with the run: the ranker's first call (round 3, after ten trials)
    is refused (401: the run stops, resumable); the resumed run ranks on without asking for the prior again."""
    state = {"refuse": True}

    def answer(body: dict) -> Reply:
        if _is_prior_question(body):
            return believer(body)
        if state["refuse"]:
            return Reply.error(401, body={"error": {"message": "Incorrect API key"}})
        return Reply.text('{"code": "%s"}' % _first_code(body))

    with FakeOpenAIServer(default=Reply.dynamic(answer)) as server:
        monkeypatch.setenv("COLLM_NAS_LLM_BASE_URL", server.base_url)
        monkeypatch.setenv("COLLM_NAS_LLM_DECODING", "text")
        with pytest.raises(UserError, match="401"):
            ws.search(dataset="cifar10", strategy="lmsearcher", llm="endpoint", prior=["llm"], budget=14, seed=2,
                      run_id="stopped")
        held = [t.ncode for t in ws.run("stopped").trials()]
        assert len(held) == 10 and sum(_is_prior_question(b) for b in server.chat_bodies) == 20
        state["refuse"] = False
        result = ws.resume("stopped")
        asked_after = sum(_is_prior_question(b) for b in server.chat_bodies)
    assert result.evaluations == 14 and asked_after == 20  # never asked again
    assert [t.ncode for t in ws.run("stopped").trials()][:10] == held


def _first_code(body: dict) -> str:
    import re

    user = [m for m in body["messages"] if m.get("role") == "user"][-1]["content"]
    return re.findall(r"\b[0-4]{6}\b", user.split("## Candidate pool", 1)[1])[0]


def test_the_llm_prior_is_refused_in_one_line_where_it_cannot_be(ws: Workspace) -> None:
    with pytest.raises(UserError, match="--prior llm asks the run's LLM, and this run has none"):
        ws.search(dataset="cifar10", strategy="lmsearcher", llm="none", prior=["llm"], budget=5, run_id="a")
    with pytest.raises(UserError, match="strategy 'rea' has neither"):
        ws.search(dataset="cifar10", strategy="rea", llm="none", prior=["llm"], budget=5, run_id="b")
    with pytest.raises(UserError, match="--ranker-pool none leaves the LLM nothing to do"):
        ws.search(dataset="cifar10", strategy="lmsearcher", llm="endpoint", llm_base_url="http://127.0.0.1:9/v1",
                  ranker_pool="none", budget=5, run_id="c")
