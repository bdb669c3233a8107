"""benchmarks/pareto.py scores accuracy by network: a code's point is its network's mean table accuracy (the
table trained each code of a network separately) and its own costs; the true front is over every legal code."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from collm_nas.core import Objectives, Trial
from collm_nas.evaluators.nb201_table import NB201TableEvaluator
from collm_nas.spaces import NB201Space

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
PAIR = "c100-params"


@pytest.fixture(scope="module")
def pareto(table_path):
    import sys

    sys.path.insert(0, str(BENCHMARKS))
    try:
        import pareto as module
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module


@pytest.fixture(scope="module")
def truths(pareto, table_path):
    return {score: pareto.true_front(table_path, PAIR, score) for score in ("networks", "codes")}


@pytest.fixture(scope="module")
def table(table_path):
    evaluator = NB201TableEvaluator(table_path, dataset="cifar100")
    evaluator.want_metrics(["cifar100_test", "params_mb"])
    return {t.ncode: t for t in evaluator.evaluate(list(evaluator.table.rows))}


@pytest.fixture(scope="module")
def members(table):
    space = NB201Space()
    out: dict[str, list[str]] = {}
    for code in table:
        if not space.structural_problems(code):
            out.setdefault(space.network_key(code), []).append(code)
    return out


def test_a_codes_accuracy_is_its_networks_mean_and_its_costs_its_own(truths, table, members):
    truth = truths["networks"]
    assert len(members) == 4929 and set(truth["points"]) == {c for codes in members.values() for c in codes}
    key = next(k for k, codes in members.items() if len({table[c].metrics["cifar100_test"] for c in codes}) > 1)
    mean = statistics.fmean(table[c].metrics["cifar100_test"] for c in members[key])
    for code in members[key]:
        accuracy, params = truth["points"][code]
        assert accuracy == pytest.approx(mean)
        assert params == table[code].metrics["params_mb"]
    # Only legal codes: an illegal cell (no path to the output) is never searched, so never on a front.
    space = NB201Space()
    for score in ("networks", "codes"):
        assert truths[score]["front"] and all(not space.structural_problems(c) for c in truths[score]["front"])


def _trials(codes: list[str], table) -> list[Trial]:
    return [Trial(seq=i, ncode=c, arch=c, round=i, status="ok", value=table[c].metrics["cifar100_test"],
                  metrics=dict(table[c].metrics)) for i, c in enumerate(codes)]


def test_the_front_by_network_is_reached_whatever_the_twins_trainings_drew(pareto, truths, table):
    """Evaluating the codes of the network-scored front reaches its whole hypervolume, though the table's own
    figures of those codes (the draws of their trainings) fall short of the by-code front."""
    truth = truths["networks"]
    objectives = Objectives.parse(truth["objectives"])
    trials = _trials(truth["front"], table)
    by_network = pareto.front_figures(trials, objectives, truth)
    assert by_network["hv_ratio"] == pytest.approx(1.0) and by_network["front_found"] == 1.0
    by_code = pareto.front_figures(trials, objectives, truths["codes"])
    assert by_code["hv_ratio"] < 1.0


def test_a_failed_trial_counts_for_nothing(pareto, truths, table):
    truth = truths["networks"]
    objectives = Objectives.parse(truth["objectives"])
    best = max(table, key=lambda c: table[c].metrics["cifar100_test"])
    failed = [Trial(seq=0, ncode=best, arch=best, round=0, status="failed", value=None)]
    figures = pareto.front_figures(failed, objectives, truth)
    assert figures["hv_ratio"] == 0.0 and figures["front_found"] == 0.0 and figures["evals_to_0.9"] is None


def test_the_front_the_hypervolume_counts_is_the_part_beyond_the_reference(pareto, truths, table):
    """The counted front is the true front's codes that beat the reference in every objective; evaluating only
    those reaches the whole hypervolume (the rest adds nothing) and finds all of it, not all of the front."""
    truth = truths["networks"]
    objectives = Objectives.parse(truth["objectives"])
    reference = objectives.signed(truth["reference"])
    counted = set(truth["counted"])
    assert counted and counted < set(truth["front"])
    for code in truth["front"]:
        beats = all(x > r for x, r in zip(objectives.signed(truth["points"][code]), reference))
        assert beats == (code in counted), code
    figures = pareto.front_figures(_trials(truth["counted"], table), objectives, truth)
    assert figures["hv_ratio"] == pytest.approx(1.0) and figures["counted_found"] == 1.0
    assert figures["front_found"] < 1.0
