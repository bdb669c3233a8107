"""Evaluators: the NAS-Bench-201 table, user callables, and make_evaluator."""

from __future__ import annotations

import gzip
import math

import pytest

import helpers_eval
from collm_nas.core.errors import UserError
from collm_nas.evaluators import (
    DATASETS,
    CallableEvaluator,
    NB201TableEvaluator,
    Trial,
    load_table,
    EVALUATORS,
)
from collm_nas.spaces import NB201Space, space_from_dict

BEST_CIFAR10_ARCH = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"


@pytest.fixture(scope="module")
def user_space():
    return space_from_dict(
        {
            "name": "toy",
            "decisions": [
                {"name": "block", "options": ["conv", "attn"], "costs": {"params": [1.0, 2.0]}},
                {"name": "heads", "options": [2, 4], "active_if": {"block": ["attn"]}},
                {"name": "act", "options": ["relu", "gelu", "silu"]},
            ],
            "base_costs": {"params": 0.25},
        }
    )


@pytest.fixture(scope="module")
def all_codes():
    return list(NB201Space().enumerate())


# ============================================================ table: metrics
def test_cifar10_searches_valid_and_reports_test(nb201_evaluator):
    ev = nb201_evaluator
    assert ev.dataset == "cifar10"
    assert ev.searched_metric == "cifar10_valid"
    assert ev.reported_metric == "cifar10_test"
    assert ev.mode == "max"
    assert "cifar10_valid" in ev.metric_note and "cifar10_test" in ev.metric_note


@pytest.mark.parametrize("dataset,column,best", [("cifar100", "cifar100_test", 73.51), ("imagenet16", "imagenet16_test", 47.31)])
def test_no_validation_column_searches_and_reports_test(table_path, all_codes, dataset, column, best):
    ev = NB201TableEvaluator(table_path, dataset=dataset)
    assert ev.searched_metric == ev.reported_metric == column
    assert "no" in ev.metric_note and "validation" in ev.metric_note
    assert "searched and reported on" in ev.metric_note and column in ev.metric_note
    results = ev.evaluate(all_codes)
    assert all(r.status == "ok" for r in results)
    top = max(results, key=lambda r: r.metrics[column])
    assert top.metrics[column] == pytest.approx(best, abs=0.01)
    assert ev.table.best(column)[1] == pytest.approx(best, abs=0.01)


def test_cifar10_best_values(nb201_evaluator, all_codes):
    ev = nb201_evaluator
    code, value = ev.table.best("cifar10_valid")
    assert code == "333132"
    assert value == pytest.approx(91.61, abs=0.01)
    [result] = ev.evaluate(["333132"])
    assert result.arch == BEST_CIFAR10_ARCH
    assert result.metrics["cifar10_valid"] == pytest.approx(91.61, abs=0.01)
    assert result.metrics["cifar10_test"] == pytest.approx(94.37, abs=0.01)
    # The search metric's best over a full evaluation is the same architecture.
    results = ev.evaluate(all_codes)
    assert max(results, key=lambda r: r.metrics["cifar10_valid"]).ncode == "333132"
    assert ev.table.best("cifar10_test")[1] == pytest.approx(94.37, abs=0.01)
    # Minimisation over a pool of codes.
    worst_code, worst = ev.table.best("cifar10_valid", ["333132", "000000", "333333"], mode="min")
    assert worst_code == "000000" and worst < 20


def test_evaluate_returns_metrics_and_cost(nb201_evaluator):
    results = nb201_evaluator.evaluate(["333132", "000300"])
    assert [r.ncode for r in results] == ["333132", "000300"]
    for r in results:
        assert isinstance(r, Trial)
        assert r.status == "ok" and r.error is None
        assert set(r.metrics) == {"cifar10_valid", "cifar10_test", "params_mb", "flops_m"}
        assert all(math.isfinite(v) for v in r.metrics.values())
        assert set(r.cost) == {"lookup_s"} and r.cost["lookup_s"] >= 0
    assert results[0].metrics["params_mb"] == pytest.approx(nb201_evaluator.table.value("333132", "params_mb_cifar10"))
    assert list(nb201_evaluator.iter_evaluate(["333132"]))[0].metrics == results[0].metrics


def test_unknown_code_is_a_failed_trial(nb201_evaluator):
    results = nb201_evaluator.evaluate(["999999", "333132", "33", ""])
    assert [r.status for r in results] == ["failed", "ok", "failed", "failed"]
    assert results[0].error and "not in the table" in results[0].error
    assert results[0].metrics == {}
    assert nb201_evaluator.resources("999999") == {}


def test_resources_follow_the_dataset(table_path):
    c10 = NB201TableEvaluator(table_path, "cifar10")
    c100 = NB201TableEvaluator(table_path, "cifar100")
    im16 = NB201TableEvaluator(table_path, "imagenet16")
    assert c10.table is c100.table  # loaded once
    for ev, suffix in [(c10, "cifar10"), (c100, "cifar100"), (im16, "imagenet16")]:
        res = ev.resources("333333")
        assert res["params_mb"] == ev.table.value("333333", f"params_mb_{suffix}")
        assert res["flops_m"] == ev.table.value("333333", f"flops_m_{suffix}")
        assert res["lat_ms_pixel3"] == ev.table.value("333333", "lat_ms_pixel3")
        assert set(res) == set(ev.resource_names)
        assert "params_mb_cifar10" not in ev.resource_names
    assert c100.resources("333333")["params_mb"] > c10.resources("333333")["params_mb"]


def test_metric_override(table_path):
    ev = NB201TableEvaluator(table_path, "cifar10", metric="cifar10_valid_test")
    assert ev.searched_metric == "cifar10_valid_test"
    assert ev.reported_metric == "cifar10_test"
    assert "--metric" in ev.metric_note
    [r] = ev.evaluate(["333132"])
    assert set(r.metrics) == {"cifar10_valid_test", "cifar10_test", "params_mb", "flops_m"}
    same = NB201TableEvaluator(table_path, "cifar100", metric="cifar100_test")
    assert set(same.evaluate(["333132"])[0].metrics) == {"cifar100_test", "params_mb", "flops_m"}


def test_better_respects_mode(nb201_evaluator):
    assert nb201_evaluator.objective.direction.better(2.0, 1.0) and not nb201_evaluator.objective.direction.better(1.0, 2.0)
    assert nb201_evaluator.objective.direction.better(-5.0, None)
    assert not nb201_evaluator.objective.direction.better(1.0, 1.0)


def test_datasets_registry():
    assert set(DATASETS) == {"cifar10", "cifar100", "imagenet16", "fashion-mnist"}  # the last: the project's own table


# ============================================================= table: errors
def _table_error(path) -> str:
    with pytest.raises(UserError) as err:
        load_table(str(path))
    message = str(err.value)
    assert "\n" not in message
    assert str(path) in message
    return message


def _header(table_path: str) -> str:
    with gzip.open(table_path, "rt", encoding="utf-8") as fh:
        return fh.readline().rstrip("\n")


def _rows(table_path: str, n: int) -> list[str]:
    with gzip.open(table_path, "rt", encoding="utf-8") as fh:
        fh.readline()
        return [fh.readline().rstrip("\n") for _ in range(n)]


def _write_gz(path, lines: list[str]) -> None:
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")


def test_table_missing_file(tmp_path):
    message = _table_error(tmp_path / "absent.csv.gz")
    assert "not found" in message and "COLLM_NAS_NB201_TABLE" in message
    with pytest.raises(UserError, match="not found"):
        NB201TableEvaluator(tmp_path / "absent.csv.gz")


def test_table_not_gzip(tmp_path):
    path = tmp_path / "plain.csv.gz"
    path.write_bytes(b"index,arch\n0,x\n")
    assert "malformed" in _table_error(path)


def test_table_truncated(tmp_path, table_path):
    path = tmp_path / "truncated.csv.gz"
    with open(table_path, "rb") as fh:
        path.write_bytes(fh.read(20_000))
    assert "malformed" in _table_error(path)


def test_table_missing_columns(tmp_path, table_path):
    header = _header(table_path).split(",")
    keep = [i for i, c in enumerate(header) if c not in ("cifar100_test", "imagenet16_test")]
    lines = [",".join(header[i] for i in keep)]
    for row in _rows(table_path, 3):
        fields = row.split(",")
        lines.append(",".join(fields[i] for i in keep))
    path = tmp_path / "cols.csv.gz"
    _write_gz(path, lines)
    message = _table_error(path)
    assert "malformed" in message and "missing column(s) cifar100_test, imagenet16_test" in message


def test_table_without_arch_column(tmp_path):
    path = tmp_path / "noarch.csv.gz"
    _write_gz(path, ["index,cifar10_valid", "0,1.0"])
    assert "'arch' column" in _table_error(path)


def test_table_empty(tmp_path):
    path = tmp_path / "empty.csv.gz"
    _write_gz(path, [])
    assert "malformed" in _table_error(path)


def test_table_wrong_row_count(tmp_path, table_path):
    path = tmp_path / "few.csv.gz"
    _write_gz(path, [_header(table_path), *_rows(table_path, 5)])
    message = _table_error(path)
    assert "5 distinct architectures, expected 15625" in message


def test_table_wrong_row_count_plain_csv(tmp_path, table_path):
    path = tmp_path / "few.csv"
    path.write_text("\n".join([_header(table_path), *_rows(table_path, 2)]) + "\n", encoding="utf-8")
    assert "2 distinct architectures" in _table_error(path)


def test_table_ragged_row(tmp_path, table_path):
    rows = _rows(table_path, 3)
    rows[1] = rows[1] + ",99"
    path = tmp_path / "ragged.csv.gz"
    _write_gz(path, [_header(table_path), *rows])
    assert "line 3 has" in _table_error(path)


def test_table_bad_arch_and_bad_number(tmp_path, table_path):
    rows = _rows(table_path, 3)
    fields = rows[2].split(",")
    fields[1] = "|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|"
    path = tmp_path / "badarch.csv.gz"
    _write_gz(path, [_header(table_path), rows[0], rows[1], ",".join(fields)])
    assert "line 4" in _table_error(path)

    fields = rows[0].split(",")
    fields[2] = "ninety"
    path = tmp_path / "badnum.csv.gz"
    _write_gz(path, [_header(table_path), ",".join(fields)])
    assert "malformed" in _table_error(path)


def test_unknown_dataset_and_metric(table_path):
    with pytest.raises(UserError, match="unknown dataset 'mnist'.*cifar10, cifar100, imagenet16"):
        NB201TableEvaluator(table_path, dataset="mnist")
    with pytest.raises(UserError, match="unknown metric 'accuracy'"):
        NB201TableEvaluator(table_path, metric="accuracy")
    with pytest.raises(UserError, match="unknown metric"):
        NB201TableEvaluator(table_path, metric="params_mb_cifar10")


# ============================================================ make_evaluator
def test_make_evaluator(table_path, user_space):
    nb201 = NB201Space()
    ev = EVALUATORS.resolve("table", nb201, dataset=None, options={"table": table_path})
    assert isinstance(ev, NB201TableEvaluator) and ev.dataset == "cifar10"
    ev = EVALUATORS.resolve("table", nb201, dataset="imagenet16", options={"table": table_path})
    assert ev.searched_metric == "imagenet16_test"
    with pytest.raises(UserError, match="covers only the nb201 space, not 'toy'"):
        EVALUATORS.resolve("table", user_space, dataset="cifar10", options={"table": table_path})
    with pytest.raises(UserError, match="no NAS-Bench-201 table configured"):
        EVALUATORS.resolve("table", nb201, dataset="cifar10")
    with pytest.raises(UserError, match="unknown evaluator 'bogus'"):
        EVALUATORS.resolve("bogus", nb201, dataset=None)
    ev = EVALUATORS.resolve("helpers_eval:score", user_space, dataset=None, metric="acc", mode="min")
    assert isinstance(ev, CallableEvaluator)
    assert (ev.searched_metric, ev.reported_metric, ev.mode) == ("acc", "acc", "min")


# =================================================================== callable
def test_callable_evaluator_by_name(user_space):
    ev = CallableEvaluator(user_space, "helpers_eval:score")
    assert ev.searched_metric == ev.reported_metric == "score"
    assert ev.mode == "max"
    assert "helpers_eval:score" in ev.metric_note
    helpers_eval.CALLS.clear()
    results = ev.evaluate(["000", "112"])
    assert [r.status for r in results] == ["ok", "ok"]
    # The function receives the decoded architecture (active decisions only).
    assert helpers_eval.CALLS == [{"block": "conv", "act": "relu"}, {"block": "attn", "heads": "4", "act": "silu"}]
    assert results[0].metrics == {"score": 8.0}
    assert results[1].arch == "block=attn, heads=4, act=silu"
    assert "wall_s" in results[0].cost


def test_callable_evaluator_with_function_and_mapping(user_space):
    ev = CallableEvaluator(user_space, helpers_eval.score_dict)
    assert ev.target == "helpers_eval:score_dict"
    [r] = ev.evaluate(["000"])
    assert r.status == "ok"
    assert r.metrics == {"score": 2.0, "params": 1.5}
    assert ev.resource_names == ("params",)
    assert ev.resources("112") == {"params": 2.25}


@pytest.mark.parametrize(
    "fn,fragment",
    [
        ("boom", "RuntimeError: boom"),
        ("not_finite", "no finite 'score'"),
        ("infinite", "no finite 'score'"),
        ("returns_none", "TypeError"),
        ("wrong_metric", "no finite 'score'"),
    ],
)
def test_callable_failures_become_failed_trials(user_space, fn, fragment):
    ev = CallableEvaluator(user_space, f"helpers_eval:{fn}")
    results = ev.evaluate(["000", "100"])
    assert [r.status for r in results] == ["failed", "failed"]
    assert all(fragment in r.error for r in results)
    assert all(r.metrics == {} for r in results)
    assert all("\n" not in r.error for r in results)


def test_callable_one_failure_does_not_stop_the_batch(user_space):
    ev = CallableEvaluator(user_space, "helpers_eval:fail_on_attn")
    results = list(ev.iter_evaluate(["000", "100", "002", "101"]))
    assert [r.status for r in results] == ["ok", "failed", "ok", "failed"]
    assert "ValueError: attention is not supported" in results[1].error


def test_callable_malformed_code_is_a_failed_trial(user_space):
    """Evaluator contract (evaluators/base.py): 'Never raises for one bad code'."""
    ev = CallableEvaluator(user_space, "helpers_eval:score")
    results = ev.evaluate(["000", "zz", "010"])  # 'zz': wrong length; '010': inactive heads set
    assert [r.status for r in results] == ["ok", "failed", "failed"]


@pytest.mark.parametrize(
    "target,fragment",
    [
        ("nope.module:fn", "cannot import evaluator module 'nope.module'"),
        ("helpers_eval:missing", "'missing' in module 'helpers_eval' is not a function"),
        ("helpers_eval:NOT_A_FUNCTION", "is not a function"),
        ("helpers_eval", "must be written module.path:function"),
        (":score", "must be written"),
        ("helpers_eval:", "must be written"),
    ],
)
def test_callable_import_errors(user_space, target, fragment):
    with pytest.raises(UserError) as err:
        CallableEvaluator(user_space, target)
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


def test_callable_bad_mode(user_space):
    with pytest.raises(UserError, match="unknown mode 'up'"):
        CallableEvaluator(user_space, "helpers_eval:score", mode="up")
    ev = CallableEvaluator(user_space, "helpers_eval:score", mode="min")
    assert ev.objective.direction.better(1.0, 2.0) and not ev.objective.direction.better(2.0, 1.0)


def test_table_evaluator_refuses_a_user_space_named_nb201(table_path):
    """The table covers the built-in NB201 cell only; a user space is refused whatever its name."""
    impostor = space_from_dict(
        {"name": "nb201", "decisions": [{"name": "depth", "options": [1, 2]}, {"name": "width", "options": [8, 16]}]}
    )
    with pytest.raises(UserError, match="covers only the nb201 space"):
        EVALUATORS.resolve("table", impostor, dataset="cifar10", options={"table": table_path})
