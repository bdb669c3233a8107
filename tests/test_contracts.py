"""The conformance suites (``collm_nas.testing``), inherited by every built-in implementation and by the
examples' user strategy and evaluator. (The store contract runs in test_store.py and test_postgres.py.)"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from collm_nas.agents import STRATEGIES
from collm_nas.core import SearchStrategy
from collm_nas.evaluators import EVALUATORS
from collm_nas.spaces import SPACES
from collm_nas.testing import EvaluatorContract, StrategyContract, contract_space

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the examples are imported as examples.*, as users run them from the root


# ================================================================= strategies
class TestRandom(StrategyContract):
    def make_strategy(self) -> SearchStrategy:
        return STRATEGIES.resolve("random")


class TestRegularizedEvolution(StrategyContract):
    budget = 25

    def make_strategy(self) -> SearchStrategy:
        return STRATEGIES.resolve("rea")


class TestLocalSearch(StrategyContract):
    batch_size = 3

    def make_strategy(self) -> SearchStrategy:
        return STRATEGIES.resolve("local")


class TestLMSearcherLearnedRanker(StrategyContract):
    """lmsearcher without an LLM: its learned ranker."""

    budget = 16

    def make_strategy(self) -> SearchStrategy:
        return STRATEGIES.resolve("lmsearcher")


class OnTheNB201Table:
    """A contract run on the real NAS-Bench-201 table (the strategy's search space and evaluator)."""

    space = "nb201"
    evaluator = "table"
    metric = "cifar10_valid"

    @pytest.fixture(autouse=True)
    def _table(self, table_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("COLLM_NAS_NB201_TABLE", table_path)


class TestLMSearcherOnNB201(OnTheNB201Table, StrategyContract):
    """The learned ranker with a space's own features (NAS-Bench-201's live-edge operation shares), on the table."""

    budget = 14

    def make_strategy(self) -> SearchStrategy:
        return STRATEGIES.resolve("lmsearcher")


class TestLMSearcherOnAConditionalSpace(StrategyContract):
    """The learned ranker on the MobileNetV3-like space (conditional decisions, too large to list: sampled pools)."""

    space = "mbv3"
    evaluator = "e2e_evaluator:score"
    metric = "score"
    budget = 14

    def make_strategy(self) -> SearchStrategy:
        return STRATEGIES.resolve("lmsearcher")


class TestExampleOptionBandit(StrategyContract):
    """The one-file user strategy of examples/, reached as module:attribute."""

    def make_strategy(self) -> SearchStrategy:
        return STRATEGIES.resolve("examples.bandit_strategy:OptionBandit")

    def test_it_comes_from_its_class_attributes(self) -> None:
        strategy = self.make_strategy()
        assert strategy.name == "option-bandit" and strategy.default_batch_size == 4
        assert strategy.navigator is strategy.generator  # one object plays both roles


class TestExampleOptionBanditOnNB201(OnTheNB201Table, StrategyContract):
    """The same user strategy on the real NAS-Bench-201 table."""

    budget = 24

    def make_strategy(self) -> SearchStrategy:
        return STRATEGIES.resolve("examples.bandit_strategy:OptionBandit")


def test_the_user_strategy_runs_from_the_cli_as_module_attribute(tmp_path: Path, table_path: str) -> None:
    from cli_runner import run_cli

    env = dict(os.environ, COLLM_NAS_RUNS_DIR=str(tmp_path / "runs"), COLLM_NAS_NB201_TABLE=table_path,
               PYTHONPATH=str(ROOT))
    done = run_cli(["search", "--strategy", "examples.bandit_strategy:OptionBandit", "--budget", "40", "--run-id", "b",
                    "--json"], env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    import json

    data = json.loads(done.stdout)
    assert data["evaluations"] == 40 and data["best"]["searched"] > 90.0
    assert data["config"]["strategy"] == "examples.bandit_strategy:OptionBandit"


# ================================================================= evaluators
class TestTableEvaluator(EvaluatorContract):
    bad_code = "33x333"

    @pytest.fixture(autouse=True)
    def _table(self, table_path: str) -> None:
        self.table_path = table_path

    def make_evaluator(self):
        return EVALUATORS.resolve("table", SPACES.resolve("nb201"), dataset="cifar100", options={"table": self.table_path})

    def codes(self):
        return ["333132", "000001", "444444"]

    def test_reference_columns_are_the_other_measurements(self, evaluator) -> None:
        assert "cifar10_valid" in evaluator.reference_columns
        assert len(evaluator.reference_values("imagenet16_test")) == 15625


class TestCallableEvaluator(EvaluatorContract):
    bad_code = "99"

    def make_evaluator(self):
        return EVALUATORS.resolve("collm_nas.testing:contract_score", contract_space(), metric="score")

    def codes(self):
        return ["0000", "2311", "1201"]  # '0000' breaks the space's rule: a failed trial, not an exception


class TestExampleDigitsMLPEvaluator(EvaluatorContract):
    """The examples' user evaluator: it trains real MLPs on the digits (about a third of a second each)."""

    bad_code = "9"

    def make_evaluator(self):
        space = SPACES.resolve(str(ROOT / "examples" / "digits_mlp.yaml"))
        return EVALUATORS.resolve("examples.digits_mlp:evaluate", space, metric="valid_acc")

    def codes(self):
        return ["0200010", "2343121"]


class TestTrainEvaluator(EvaluatorContract):
    """Real training of a tiny NB201 network on the digits (one epoch)."""

    bad_code = "33333"

    def make_evaluator(self):
        return EVALUATORS.resolve("train", SPACES.resolve("nb201"), dataset="digits",
                              options={"epochs": "1", "channels": "4", "cells": "1", "image_size": "8",
                                             "threads": "1"})

    def codes(self):
        return ["333132"]
