"""Logprob scoring on the real embedded model: collm-nas's server route reads the options' probabilities from the
logits the sampler itself uses, and an lmsearcher run ranks every pool by them (SmolLM2-135M, llama.cpp)."""

from __future__ import annotations

import math
import os

import pytest
from langchain_core.messages import HumanMessage, SystemMessage

from collm_nas import Workspace
from collm_nas.llm.local_server import INSTALL_HINT, local_model_available

pytestmark = pytest.mark.local_llm

if not local_model_available():
    if os.environ.get("COLLM_NAS_REQUIRE_LOCAL_LLM") == "1":
        pytest.fail(f"COLLM_NAS_REQUIRE_LOCAL_LLM=1 but {INSTALL_HINT}", pytrace=False)
    pytest.skip("the local model is not installed", allow_module_level=True)


def test_choice_route_reads_the_probabilities_the_greedy_token_follows():
    from collm_nas.llm.session import open_llm

    questions = [("Which is a fruit?", ["car", "apple", "house", "river"]),
                 ("Which is a colour?", ["seven", "table", "green", "walk"]),
                 ("Which is a number?", ["dog", "blue", "twelve", "chair"])]
    with open_llm("local", {"ranker.temperature": 0.0}, roles=("ranker",)) as roles:
        chat = roles.chat("ranker")
        for question, options in questions:
            labels = list("ABCD")
            text = "\n".join(f"{label}. {option}" for label, option in zip(labels, options))
            messages = [SystemMessage("Answer with the letter of the option you choose and nothing else."),
                        HumanMessage(f"{question}\n{text}\nAnswer with its letter only.")]
            result = chat.choice_logprobs(messages, labels)
            assert result.ok, result.error
            assert set(result.logprobs) == set(labels)
            assert sum(math.exp(v) for v in result.logprobs.values()) == pytest.approx(1.0)
            assert len(set(round(v, 6) for v in result.logprobs.values())) > 1  # real, unequal figures
            # Greedy decoding under the grammar writes the likeliest label: the logits read are the sampler's.
            assert result.text == max(result.logprobs, key=result.logprobs.get)
            assert result.completion_tokens == 1 and result.prompt_tokens > 20


def test_lmsearcher_ranks_by_logprob_on_the_local_model(tmp_path, table_path):
    ws = Workspace(tmp_path / "runs", table_path=table_path)
    result = ws.search(space="nb201", dataset="cifar10", strategy="lmsearcher", llm="local", budget=14, seed=0,
                       run_id="lp", ranker_scoring="logprob", ranker_orders=3)
    assert result.status == "finished" and result.evaluations == 14
    summary = ws.run("lp").llm_summary()
    assert summary["modes"] == {"ranker": ["logprob"]}
    assert not summary["degraded"] and summary["failed_calls"] == 0
    # Rounds 11-14 each ranked one pool of the GP's best 5 in 3 orders, one output token a call.
    assert summary["calls"] == 4 * 3
    assert summary["completion_tokens"] == summary["calls"]
    strategies = [r.get("strategy") or "" for r in ws.run("lp").rounds()]
    assert sum("(llm on learned pools ranker)" in s for s in strategies) == 4


def test_the_local_models_knowledge_is_the_rankers_prior_from_round_one(tmp_path, table_path):
    """--prior llm on the real embedded model: 20 one-token questions in round 1, every one answered with real
    probabilities, and the first code evaluated is the best legal code by the values the answer gives."""
    from collm_nas.agents.llm_prior import ask_preferences
    from collm_nas.llm.session import open_llm
    from collm_nas.spaces.nb201 import NB201Space, reaches_output

    ws = Workspace(tmp_path / "runs", table_path=table_path)
    result = ws.search(space="nb201", dataset="cifar10", strategy="lmsearcher", llm="local", budget=6, seed=0,
                       run_id="known", prior=["llm"], ranker_pool="none")
    assert result.status == "finished" and result.evaluations == 6 and result.degraded is None
    run = ws.run("known")
    summary = run.llm_summary()
    assert (summary["calls"], summary["failed_calls"], summary["completion_tokens"]) == (20, 0, 20)
    assert (summary["llm_rounds"], summary["wanted_rounds"]) == (1, 1) and summary["prompt_tokens"] > 20 * 50
    space = NB201Space()
    rounds = run.rounds()
    assert rounds[0]["llm"]["calls"] == 20 and all(r["llm"]["calls"] == 0 for r in rounds[1:])
    order = rounds[0]["strategy"].split("the LLM's prior: ", 1)[1].split(" > ")
    assert sorted(order) == sorted(["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"])
    # Asked again (greedy, so the same answer): every legal code gets a value, and round 1 evaluated the best.
    with open_llm("local", {}, roles=("ranker",)) as roles:
        again = ask_preferences(roles.chat("ranker"), space, "cifar10_valid")
    assert again.ranking(0) == order
    codes = [c for c in space.enumerate() if reaches_output(c)]
    values = dict(zip(codes, again.values(space, codes)))
    assert values[run.trials()[0].ncode] == max(values.values())
    assert len(set(values.values())) > 10  # real, unequal preferences
