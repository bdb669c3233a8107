"""The hybrid strategy against a fake OpenAI-compatible server over real HTTP.

The fake Generator proposes random codes (plus one illegal code and one
repeat); everything else is real: ChatOpenAI, the LangGraph loop, the SQLite
trial store, the learned ranker and the NAS-Bench-201 table.
"""

from __future__ import annotations

import json
import random
import re
import statistics

from collm_nas import Workspace
from collm_nas.evaluators.nb201_table import load_table
from collm_nas.spaces.nb201 import NB201Space
from fake_openai import FakeOpenAIServer, Reply
from test_collm import STRATEGY, last_user, llm_env, role_of  # noqa: F401  (llm_env is a fixture)

ASKED = re.compile(r"Write exactly (\d+) new codes")


class Proposer:
    """Answers the Navigator with a strategy and the Generator with as many random codes as asked."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.asked: list[int] = []
        self.proposed: list[list[str]] = []  # legal proposals of each generator call, in order

    def __call__(self, request: dict) -> Reply:
        if role_of(request) == "navigator":
            return Reply.text(json.dumps(STRATEGY))
        n = int(ASKED.findall(last_user(request))[-1])
        self.asked.append(n)
        codes = ["".join(self.rng.choice("01234") for _ in range(6)) for _ in range(n)]
        self.proposed.append(list(codes))
        # One code of the wrong length and one repeat: the Coordinator must still count them.
        return Reply.text(json.dumps({"codes": [*codes, "12345", codes[0]]}))


def _search(tmp_path, table_path, **kw):
    ws = Workspace(tmp_path / "runs", table_path=table_path)
    result = ws.search(space="nb201", dataset="cifar10", strategy="hybrid", llm="endpoint", run_id="h",
                       **{"budget": 40, "batch_size": 5, "seed": 0, **kw})
    return ws, result


def test_hybrid_asks_for_more_and_the_ranker_picks_the_better_proposals(tmp_path, table_path, llm_env):
    proposer = Proposer(seed=3)
    with FakeOpenAIServer(default=Reply.dynamic(proposer)) as server:
        llm_env(server)
        ws, result = _search(tmp_path, table_path)
    assert result.evaluations == 40 and result.status == "finished"
    # Four candidates are asked per slot (5 per round -> 20).
    assert proposer.asked and set(proposer.asked) == {20}
    run = ws.run("h")
    rounds = run.rounds()
    assert len(rounds) == 8
    for r in rounds:
        assert r["accepted"] == 5 and r["topped_up"] == 0
        assert r["illegal"] >= 1 and r["duplicates"] >= 1  # the wrong-length code, degenerate cells; the repeat
        assert (r["accepted"] + r["ranked_out"] + r["illegal"] + r["duplicates"] + r["same_network"]
                    == r["proposed"])
    summary = run.llm_summary()
    assert summary["ranked_out"] == sum(r["ranked_out"] for r in rounds) > 0
    # Every evaluated code was proposed in its own round.
    table = load_table(table_path)
    space = NB201Space()
    by_round: dict[int, list[str]] = {}
    for t in run.trials():
        by_round.setdefault(t.round, []).append(t.ncode)
    picked_gain, random_gain = [], []
    for i, proposals in enumerate(proposer.proposed):
        evaluated = by_round[i + 1]
        assert set(evaluated) <= set(proposals)
        if i < 2:
            continue  # the ranker knows little in the first rounds
        candidates = {c for c in proposals if not space.structural_problems(c)}
        earlier = {c for j in range(1, i + 1) for c in by_round[j]}
        ranked_out = candidates - set(evaluated) - earlier
        picked_gain.append(statistics.mean(table.value(c, "cifar10_valid") for c in evaluated))
        random_gain.append(statistics.mean(table.value(c, "cifar10_valid") for c in ranked_out))
    # The learned ranker's picks are clearly better than what it left out, round after round.
    wins = sum(p > q for p, q in zip(picked_gain, random_gain))
    assert wins >= len(picked_gain) - 1, (picked_gain, random_gain)
    assert statistics.mean(picked_gain) > statistics.mean(random_gain) + 2.0


def test_hybrid_without_a_working_llm_finishes_on_the_learned_ranker_fallback(tmp_path, table_path, llm_env):
    with FakeOpenAIServer(default=Reply.error(500)) as server:
        llm_env(server)
        ws, result = _search(tmp_path, table_path, budget=20, fallback="lmsearcher")
    assert result.evaluations == 20 and result.status == "finished"
    rounds = ws.run("h").rounds()
    assert sum(r["topped_up"] for r in rounds) == 20
    assert all(r["accepted"] == 0 for r in rounds)


def test_hybrid_with_llm_none_is_the_fallback_strategy(tmp_path, table_path):
    ws = Workspace(tmp_path / "runs", table_path=table_path)
    result = ws.search(space="nb201", dataset="cifar10", strategy="hybrid", llm="none", fallback="lmsearcher",
                       budget=15, seed=0, run_id="n")
    assert result.evaluations == 15
    assert ws.run("n").config.fallback == "lmsearcher"


def test_hybrid_with_a_tuned_ranker_model_lets_it_pick_from_the_learned_top_ten(tmp_path, table_path):
    """A tuned ranker (the compact style, as `--llm local --llm-model DIR` gives it) picks each slot itself."""
    from collm_nas.llm.chat_models import RetryPolicy, RoleModelConfig
    from collm_nas.llm.session import LLMRoles
    from collm_nas.llm.structured import StructuredChat

    proposer = Proposer(seed=5)
    pools: list[list[str]] = []

    def answer(request: dict) -> Reply:
        system = next(m["content"] for m in request["messages"] if m["role"] == "system")
        if "You rank candidate architectures" not in system:
            return proposer(request)
        pool = last_user(request).split("\npool:\n", 1)[1].split()
        pools.append(pool)
        return Reply.text(pool[-1])  # the learned ranker's tenth: only the LLM would pick it

    fast = RetryPolicy(max_attempts=2, initial_wait_s=0.01, max_wait_s=0.05, max_total_s=5.0, jitter_s=0.0)
    with FakeOpenAIServer(default=Reply.dynamic(answer)) as server:
        chats = {role: StructuredChat(RoleModelConfig(role=role, base_url=server.base_url, model="fake",
                                                      timeout_s=5, retry=fast, decoding="text"))
                 for role in ("navigator", "generator", "ranker")}
        roles = LLMRoles("custom", chats, ranker_style="compact", tuned_ranker=True)
        ws = Workspace(tmp_path / "runs", table_path=table_path)
        result = ws.search(space="nb201", dataset="cifar10", strategy="hybrid", run_id="t", budget=15,
                           batch_size=5, seed=0, llm_roles=roles)
    assert result.evaluations == 15
    trials = ws.run("t").trials()
    picked_by_llm = {pool[-1] for pool in pools}
    assert pools and all(2 <= len(p) <= 10 for p in pools)
    # Every round after the first: its evaluated codes are the tuned ranker's picks (5 calls a round).
    later = [t.ncode for t in trials if t.round > 1]
    assert later and set(later) <= picked_by_llm
    ranker_calls = sum(r["llm"].get("prompt_tokens_by_role", {}).get("ranker", 0) > 0 for r in ws.run("t").rounds())
    assert ranker_calls >= 2
