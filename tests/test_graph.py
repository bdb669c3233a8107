"""The search graph itself: its nodes, and an interruption in the middle of a batch."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from collm_nas import Workspace
from collm_nas.graphs.graph import build_graph
from collm_nas.progress import ProgressBar

sys.path.insert(0, str(Path(__file__).parent))
import e2e_evaluator  # noqa: E402


def test_graph_has_the_named_round_nodes() -> None:
    nodes = set(build_graph().get_graph().nodes)
    assert {"navigator", "generator", "coordinator", "evaluate", "record", "finish"} <= nodes


def test_interrupt_mid_batch_then_resume_evaluates_each_code_once(
    tmp_path: Path, table_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    e2e_evaluator.CALLS.clear()
    monkeypatch.setenv("E2E_INTERRUPT_AT", "21")  # the 5th code of the 3rd batch of 8
    ws = Workspace(tmp_path / "runs", table_path=table_path)
    with pytest.raises(KeyboardInterrupt):
        ws.search(evaluator="e2e_evaluator:score", strategy="rea", budget=40, batch_size=8, run_id="mid")
    run = ws.run("mid")
    assert run.info.status == "interrupted" and len(run.trials()) == 20
    monkeypatch.delenv("E2E_INTERRUPT_AT")
    result = ws.resume("mid")
    assert result.evaluations == 40 and result.status == "finished"
    # Every code evaluated once, except the one whose evaluation was cut short.
    assert len(e2e_evaluator.CALLS) == 41 and len(set(e2e_evaluator.CALLS)) == 40
    assert len(ws.run("mid").trials()) == 40
    assert sorted({t.round for t in run.trials()}) == [1, 2, 3, 4, 5]


def test_progress_bar_line() -> None:
    out = io.StringIO()
    bar = ProgressBar(stream=out, enabled=True, width=10)
    event = {"event": "round", "evaluated": 5, "budget": 10, "round": 5,
             "best": {"value": 91.5}, "searched_metric": "cifar10_valid"}
    bar(event)
    bar.close()
    text = out.getvalue()
    assert "[#####.....] 5/10 evals" in text and "best 91.5 cifar10_valid" in text and "evals/s" in text
    silent = io.StringIO()
    ProgressBar(stream=silent, enabled=False)(event)
    assert silent.getvalue() == ""
