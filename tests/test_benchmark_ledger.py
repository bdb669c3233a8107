"""benchmarks/llm_strategies.py keeps a committed ledger of finished searches: a search in it never runs again,
even in a fresh checkout whose runs folder is empty, and the table is built from it."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from collm_nas.core.errors import UserError

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def llm_strategies(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    sys.modules.pop("llm_strategies", None)
    import llm_strategies

    return llm_strategies


def test_the_ledger_outlives_the_runs_folder(tmp_path: Path, table_path: str, llm_strategies,
                                             capsys: pytest.CaptureFixture) -> None:
    ledger, runs = tmp_path / "ledger.jsonl", tmp_path / "runs"
    common = ["--rows", "random", "--datasets", "cifar10", "--budget", "8", "--runs-dir", str(runs),
              "--ledger", str(ledger), "--table", table_path]
    llm_strategies.main([*common, "--seeds", "2"])
    first = [json.loads(line) for line in ledger.read_text().splitlines()]
    assert [(r["row"], r["dataset"], r["seed"], r["budget"]) for r in first] == [
        ("random", "cifar10", 0, 8), ("random", "cifar10", 1, 8)]
    assert all(r["evaluations"] == 8 and r["reported"] is not None and r["wall_s"] > 0 for r in first)
    capsys.readouterr()

    shutil.rmtree(runs)  # a fresh checkout: no runs, only the committed ledger
    llm_strategies.main([*common, "--seeds", "3"])
    out = capsys.readouterr().out
    assert "[1/1] random-cifar10-b8-s2" in out and "-s0" not in out and "-s1" not in out
    assert [json.loads(line)["seed"] for line in ledger.read_text().splitlines()] == [0, 1, 2]
    assert json.loads(ledger.read_text().splitlines()[0]) == first[0]  # the old records are kept as they were
    assert "| random search | " in out and "random 3 of 3" in out

    # --first-seed leaves the lower seeds to another sitting, and a report runs nothing
    llm_strategies.main([*common, "--seeds", "4", "--first-seed", "3"])
    assert "[1/1] random-cifar10-b8-s3" in capsys.readouterr().out
    llm_strategies.main([*common, "--seeds", "5", "--report"])
    out = capsys.readouterr().out
    assert "random 4 of 5" in out and "[1/" not in out and "measured on: " in out
    assert len(ledger.read_text().splitlines()) == 4

    # --collect ledgers what a sitting of the old script left finished in the runs folder, and runs nothing
    lost = ledger.read_text().splitlines()
    ledger.write_text("\n".join(lost[:3]) + "\n")  # seed 3's record is missing; its run is finished
    llm_strategies.main([*common, "--seeds", "6", "--collect"])
    out = capsys.readouterr().out
    assert "ledgered random-cifar10-b8-s3" in out and "[1/" not in out and "random 4 of 6" in out
    assert [json.loads(line)["seed"] for line in ledger.read_text().splitlines()] == [0, 1, 2, 3]


def test_a_damaged_ledger_line_is_named(tmp_path: Path, llm_strategies) -> None:
    ledger = tmp_path / "ledger.jsonl"
    ledger.write_text('{"row": "random", "dataset": "cifar10", "seed": 0, "budget": 8}\n{"row": "random"\n')
    with pytest.raises(UserError, match=r"line 2 is not a search record"):
        llm_strategies.read_ledger(ledger)
