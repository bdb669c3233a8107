"""LM-Searcher: the lmsearcher strategy (learned and LLM ranker), priors, trajectories, plots."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from collm_nas import Workspace
from collm_nas.core.errors import UserError
from collm_nas.evaluators.nb201_table import load_table

from fake_openai import FakeOpenAIServer, Reply

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def ws(tmp_path: Path, table_path: str) -> Workspace:
    yield Workspace(tmp_path / "runs", table_path=table_path)


@pytest.mark.e2e
def test_lmsearcher_without_llm_uses_the_learned_ranker(ws: Workspace) -> None:
    result = ws.search(dataset="cifar10", strategy="lmsearcher", llm="none", budget=40, seed=1, run_id="lm")
    trials = ws.run("lm").trials()
    assert result.evaluations == 40 and len({t.ncode for t in trials}) == 40
    assert ws.run("lm").llm_summary() is None
    # After the random start the ranker's picks are evaluated, not top-ups.
    late = [r for r in ws.run("lm").rounds() if r["round"] > 10]
    assert late and all(r["accepted"] == 1 and r["topped_up"] == 0 for r in late)
    assert "learned ranker" in late[0]["strategy"]


@pytest.mark.e2e
def test_prior_from_another_dataset_is_accepted_and_the_target_is_refused(ws: Workspace) -> None:
    result = ws.search(dataset="imagenet16", strategy="lmsearcher", llm="none", budget=30, seed=0,
                       prior=["table:cifar100_test"], run_id="warm")
    assert result.evaluations == 30
    with pytest.raises(UserError, match="never come from the target"):
        ws.search(dataset="imagenet16", strategy="lmsearcher", llm="none", budget=30,
                  prior=["table:imagenet16_test"], run_id="cheat")
    with pytest.raises(UserError, match="never come from the target"):
        ws.search(dataset="cifar10", strategy="lmsearcher", llm="none", budget=30,
                  prior=["table:cifar10_test"], run_id="cheat2")
    # Another run as prior: fine for another dataset, refused for the same task.
    ws.search(dataset="cifar100", strategy="random", budget=20, seed=3, run_id="c100")
    ws.search(dataset="cifar10", strategy="lmsearcher", llm="none", budget=15, prior=["c100"], run_id="from-run")
    with pytest.raises(UserError, match="same task"):
        ws.search(dataset="cifar100", strategy="lmsearcher", llm="none", budget=15, prior=["c100"], run_id="same")


def _pool_of(request: dict) -> list[str]:
    user = [m for m in request["messages"] if m.get("role") == "user"][-1]["content"]
    section = user.split("## Candidate pool", 1)[1]
    return re.findall(r"\b[0-4]{6}\b", section)


def test_lmsearcher_with_an_llm_ranker_and_answers_outside_the_pool(ws: Workspace, monkeypatch) -> None:
    state = {"n": 0}

    def answer(request: dict) -> Reply:
        state["n"] += 1
        pool = _pool_of(request)
        if state["n"] % 3 == 0:
            return Reply.text('{"code": "999999"}')  # outside the pool: a redraw follows
        return Reply.text(f'I would pick {pool[-1]} because it looks strong.')

    with FakeOpenAIServer(default=Reply.dynamic(answer)) as server:
        monkeypatch.setenv("COLLM_NAS_LLM_BASE_URL", server.base_url)
        monkeypatch.setenv("COLLM_NAS_LLM_DECODING", "text")
        monkeypatch.setenv("COLLM_NAS_LLM_RETRY_INITIAL_WAIT_S", "0.01")
        result = ws.search(dataset="cifar100", strategy="lmsearcher", llm="endpoint", budget=20, seed=0,
                           ranker_pool="subspace", run_id="llm-rank")
        bodies = server.chat_bodies
    assert result.evaluations == 20
    assert bodies and all(len(_pool_of(b)) == 10 for b in bodies)
    summary = ws.run("llm-rank").llm_summary()
    assert summary["modes"] == {"ranker": ["text"]} and summary["calls"] == len(bodies)
    assert ws.run("llm-rank").rounds()[-1]["llm"]["calls"] >= 1


def test_the_llm_ranks_the_learned_rankers_best_candidates_shuffled(ws: Workspace, monkeypatch) -> None:
    """ranker_pool=learned (the default): each pool the model sees is the learned ranker's next best unseen
    candidates, in an order that is not the ranker's, and the model's pick (here always the last shown) is what
    gets evaluated."""
    import collm_nas.agents.lmsearcher as lmsearcher

    rankings: list[list[str]] = []
    real = lmsearcher.learned_ranking

    def recorded(ctx, pool, acquisition="ei"):
        out = real(ctx, pool, acquisition)
        rankings.append(out)
        return out

    monkeypatch.setattr(lmsearcher, "learned_ranking", recorded)
    picks: list[str] = []

    def answer(request: dict) -> Reply:
        picks.append(_pool_of(request)[-1])
        return Reply.text(f'{{"code": "{picks[-1]}"}}')

    with FakeOpenAIServer(default=Reply.dynamic(answer)) as server:
        monkeypatch.setenv("COLLM_NAS_LLM_BASE_URL", server.base_url)
        monkeypatch.setenv("COLLM_NAS_LLM_DECODING", "text")
        result = ws.search(dataset="cifar10", strategy="lmsearcher", llm="endpoint", budget=22, seed=3,
                           run_id="narrowed")
        pools = [_pool_of(b) for b in server.chat_bodies]
    assert result.evaluations == 22 and len(pools) == 12 == len(rankings)  # one ranked round after 10 random
    for pool, ranking in zip(pools, rankings):
        assert len(pool) == 5 and set(pool) == set(ranking[:5])
    assert sum(pool != ranking[:5] for pool, ranking in zip(pools, rankings)) >= 6  # shuffled, not the GP's order
    trials = ws.run("narrowed").trials()
    assert [t.ncode for t in trials[10:]] == picks  # the model's picks, not the learned ranker's first
    assert sum(p != r[0] for p, r in zip(picks, rankings)) >= 6
    assert "llm on learned pools" in ws.run("narrowed").rounds()[-1]["strategy"]
    assert ws.run("narrowed").config.ranker_pool == "learned"

    # Two picks a round from pools of 3: the second pool is the best 3 of what the first pick left.
    rankings.clear()
    picks.clear()
    with FakeOpenAIServer(default=Reply.dynamic(answer)) as server:
        monkeypatch.setenv("COLLM_NAS_LLM_BASE_URL", server.base_url)
        ws.search(dataset="cifar10", strategy="lmsearcher", llm="endpoint", budget=14, seed=3, batch_size=2,
                  ranker_pool="learned", ranker_pool_size=3, run_id="narrower")
        pools = [_pool_of(b) for b in server.chat_bodies]
    assert [len(pool) for pool in pools] == [3, 3, 3, 3] and len(rankings) == 2
    for r, ranking in enumerate(rankings):
        first, second = pools[2 * r], pools[2 * r + 1]
        assert set(first) == set(ranking[:3]) and set(second) == set(ranking[:4]) - {picks[2 * r]}


@pytest.mark.e2e
def test_exported_trajectories_round_trip_and_point_at_the_true_best(ws: Workspace, tmp_path: Path,
                                                                      table_path: str) -> None:
    ws.search(dataset="cifar100", strategy="local", budget=40, seed=2, run_id="src")
    out = tmp_path / "traj.jsonl"
    env = {"COLLM_NAS_RUNS_DIR": str(tmp_path / "runs"), "COLLM_NAS_NB201_TABLE": table_path,
           "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "collm_nas.cli", "export-trajectories", "src", "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = out.read_text().splitlines()
    assert len(lines) == 40 - 5 - 1 and "wrote 34 samples" in done.stdout
    table = load_table(table_path)
    for line in lines:
        sample = json.loads(line)
        pool = sample["pool"]
        assert 2 <= len(pool) <= 10
        truth = max(pool, key=lambda c: table.value(c, "cifar100_test"))
        assert sample["answer"] == truth
        assert sample["messages"][-1]["content"] == truth  # compact (the default): the bare code
        assert [m["role"] for m in sample["messages"]] == ["system", "user", "assistant"]
        assert all(code in sample["messages"][1]["content"] for code in pool)
    full = tmp_path / "full.jsonl"
    done = subprocess.run([sys.executable, "-m", "collm_nas.cli", "export-trajectories", "src", "--out", str(full),
                           "--format", "full", "--stride", "5"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    samples = [json.loads(line) for line in full.read_text().splitlines()]
    assert [s["meta"]["step"] for s in samples] == list(range(5, 39, 5))
    assert all(json.loads(s["messages"][-1]["content"]) == {"code": s["answer"]} for s in samples)
    assert all("## Candidate pool" in s["messages"][1]["content"] for s in samples)


@pytest.mark.e2e
def test_export_refuses_unfinished_runs_and_plot_writes_a_png(ws: Workspace, tmp_path: Path,
                                                             table_path: str) -> None:
    ws.search(dataset="cifar10", strategy="rea", budget=30, seed=0, run_id="a")
    ws.search(dataset="cifar10", strategy="local", budget=30, seed=0, run_id="b")
    ws.store.set_status("b", "interrupted")
    env = {"COLLM_NAS_RUNS_DIR": str(tmp_path / "runs"), "COLLM_NAS_NB201_TABLE": table_path,
           "PATH": "/usr/bin:/bin"}
    cli = [sys.executable, "-m", "collm_nas.cli"]
    refused = subprocess.run([*cli, "export-trajectories", "b", "--out", str(tmp_path / "x.jsonl")], env=env,
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "not finished" in refused.stderr and "Traceback" not in refused.stderr
    png = tmp_path / "plot.png"
    drawn = subprocess.run([*cli, "plot", "a", "b", "--out", str(png)], env=env, capture_output=True, text=True,
                           timeout=120)
    assert drawn.returncode == 0, drawn.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_runs_stored_before_ranker_pool_existed_keep_the_subspace_pools() -> None:
    from collm_nas.core.config import RunConfig

    new = RunConfig(strategy="lmsearcher", llm="local")
    assert new.ranker_pool == "learned"
    stored = new.model_dump()
    assert RunConfig.from_stored(stored).ranker_pool == "learned"  # a run stored with the field keeps its value
    del stored["ranker_pool"]
    assert RunConfig.from_stored(stored).ranker_pool == "subspace"  # one stored before it: what it ran with
