"""The command line: a real search, listing, showing, and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from collm_nas import Workspace

from cli_runner import run_cli

ROOT = Path(__file__).resolve().parents[1]


def cli(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    """The command line in this process (its own environment, captured output): see tests/cli_runner.py."""
    return run_cli(args, env=env, timeout=timeout)


@pytest.fixture
def env(tmp_path: Path, table_path: str) -> dict[str, str]:
    e = dict(os.environ)
    e.update(COLLM_NAS_RUNS_DIR=str(tmp_path / "runs"), COLLM_NAS_NB201_TABLE=table_path,
             PYTHONPATH=str(ROOT / "tests"))
    return e


def test_search_json_reports_best_and_is_listed(env: dict[str, str]) -> None:
    out = cli("search", "--strategy", "local", "--budget", "40", "--seed", "1", "--run-id", "cli-a", "--json", env=env)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["run_id"] == "cli-a" and data["evaluations"] == 40 and data["status"] == "finished"
    assert len(data["best"]["ncode"]) == 6 and data["best"]["arch"].startswith("|")
    assert set(data["best"]["metrics"]) >= {"cifar10_valid", "cifar10_test"}
    assert data["searched_metric"] == "cifar10_valid" and data["reported_metric"] == "cifar10_test"

    runs = json.loads(cli("runs", "--json", env=env).stdout)
    assert [r["run_id"] for r in runs] == ["cli-a"] and runs[0]["status"] == "finished"

    shown = json.loads(cli("show", "cli-a", "--format", "json", env=env).stdout)
    assert len(shown["trials"]) == 40 and len({t["ncode"] for t in shown["trials"]}) == 40
    top = cli("show", "cli-a", "--top", "3", "--format", "csv", env=env).stdout.strip().splitlines()
    assert len(top) == 4 and top[0].startswith("eval,round,ncode,arch")
    values = [float(line.split(",")[5]) for line in top[1:]]
    assert values == sorted(values, reverse=True) and values[0] == data["best"]["searched"]
    table = cli("show", "cli-a", env=env).stdout
    assert data["best"]["ncode"] in table


def test_human_output_says_what_is_searched_and_reported(env: dict[str, str]) -> None:
    out = cli("search", "--dataset", "imagenet16", "--strategy", "random", "--budget", "5", env=env)
    assert out.returncode == 0, out.stderr
    assert "imagenet16_test" in out.stdout and "no ImageNet16-120 validation accuracy" in out.stdout
    assert "best NCode" in out.stdout


def test_constraint_is_respected(env: dict[str, str]) -> None:
    out = cli("search", "--strategy", "rea", "--budget", "60", "--constraint", "params_mb<=0.5",
              "--constraint", "lat_ms_pixel3<=20", "--run-id", "small", "--json", env=env)
    assert out.returncode == 0, out.stderr
    trials = json.loads(cli("show", "small", "--format", "json", env=env).stdout)["trials"]
    assert len(trials) == 60 and all(t["params_mb"] <= 0.5 for t in trials)


def test_target_stops_early(env: dict[str, str]) -> None:
    out = cli("search", "--strategy", "local", "--budget", "500", "--target", "90", "--json", env=env)
    data = json.loads(out.stdout)
    assert data["stop_reason"] == "target" and data["evaluations"] < 500 and data["best"]["searched"] >= 90


def test_user_space_with_callable_evaluator(env: dict[str, str], tmp_path: Path) -> None:
    space = tmp_path / "tiny.yaml"
    space.write_text(
        "name: tiny\n"
        "decisions:\n"
        "  - {name: depth, options: [1, 2, 3]}\n"
        "  - {name: width, options: [8, 16, 32, 64], costs: {params_mb: [0.1, 0.2, 0.4, 0.8]}}\n"
        "  - {name: kernel, options: [3, 5], active_if: {depth: [2, 3]}}\n"
        "base_costs: {params_mb: 0.05}\n"
    )
    out = cli("search", "--space", str(space), "--evaluator", "e2e_evaluator:score", "--strategy", "random",
              "--budget", "8", "--constraint", "params_mb<=0.5", "--json", env=env)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["evaluations"] == 8 and data["searched_metric"] == "score"
    # 3 depths x 3 widths allowed (<=0.45 MB) with kernel only for depth 2/3: 3 + 3*2*... = 15 legal codes
    too_big = cli("search", "--space", str(space), "--evaluator", "e2e_evaluator:score", "--budget", "16",
                  "--constraint", "params_mb<=0.5", env=env)
    assert too_big.returncode == 2 and "larger than the space" in too_big.stderr


def test_describe_encode_decode_check(env: dict[str, str]) -> None:
    assert "NCode" in cli("describe", env=env).stdout
    arch = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"
    assert cli("encode", arch, env=env).stdout.strip() == "333132"
    assert cli("decode", "333132", env=env).stdout.strip() == arch
    checked = cli("check", "333132", "000000", "--constraint", "params_mb<=1.0", "--json", env=env)
    reports = json.loads(checked.stdout)
    assert checked.returncode == 1
    assert [r["valid"] for r in reports] == [False, False]
    assert reports[0]["problems"][0]["kind"] == "constraint" and reports[1]["problems"][0]["kind"] == "structure"


BAD_INPUTS = [
    (["search", "--space", "nb999"], "unknown space 'nb999'"),
    (["search", "--dataset", "mnist"], "unknown dataset 'mnist'"),
    (["search", "--strategy", "bayes"], "unknown strategy 'bayes'"),
    (["search", "--metric", "accuracy"], "unknown metric 'accuracy'"),
    (["search", "--constraint", "params_mb<=<1"], "bad constraint"),
    (["search", "--constraint", "weights<=1"], "unknown resource 'weights'"),
    (["search", "--budget", "0"], "budget must be at least 1"),
    (["search", "--budget", "15625"], "larger than the space"),
    (["search", "--batch-size", "0"], "batch size must be at least 1"),
    (["search", "--table", "/nonexistent/nb201.csv.gz"], "not found"),
    (["search", "--space", "missing.yaml"], "does not exist"),
    (["search", "--evaluator", "no_such_module:fn", "--space", "nb201"], "cannot import"),
    (["search", "--run-id", "bad id!"], "bad run id"),
    (["decode", "33x3"], "malformed NCode"),
    (["encode", "|conv~0|"], "not a NAS-Bench-201 string"),
    (["resume", "no-such-run"], "unknown run 'no-such-run'"),
    (["show", "no-such-run"], "unknown run 'no-such-run'"),
    (["search", "--budget", "many"], "invalid int value"),
]


@pytest.fixture(scope="module")
def kept_run(tmp_path_factory: pytest.TempPathFactory, table_path: str) -> tuple[dict[str, str], list]:
    """A module-wide runs folder holding one finished run that bad commands must not touch."""
    root = tmp_path_factory.mktemp("kept")
    e = dict(os.environ)
    e.update(COLLM_NAS_RUNS_DIR=str(root / "runs"), COLLM_NAS_NB201_TABLE=table_path,
             PYTHONPATH=str(ROOT / "tests"))
    assert cli("search", "--budget", "3", "--run-id", "keep", "--json", env=e).returncode == 0
    return e, _snapshot(e)


def _snapshot(env: dict[str, str]) -> list:
    ws = Workspace(env["COLLM_NAS_RUNS_DIR"], table_path=env["COLLM_NAS_NB201_TABLE"])
    return [(r.run_id, r.status, r.n_trials, [(t.ncode, t.value) for t in ws.run(r.run_id).trials()])
            for r in ws.runs()]


@pytest.mark.parametrize("args,needle", BAD_INPUTS, ids=[" ".join(a) for a, _ in BAD_INPUTS])
def test_bad_input_is_one_line_exit_2_and_keeps_runs(kept_run: tuple, args: list[str], needle: str) -> None:
    env, before = kept_run
    out = cli(*args, env=env)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], out.stderr
    assert "Traceback" not in out.stderr and out.stdout == ""
    assert _snapshot(env) == before


def test_malformed_table_is_one_line(env: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv.gz"
    bad.write_bytes(b"this is not gzip")
    out = cli("search", "--table", str(bad), env=env)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1 and "malformed" in out.stderr


def test_resuming_finished_run_and_reusing_id_are_refused(env: dict[str, str]) -> None:
    assert cli("search", "--budget", "5", "--run-id", "done", "--json", env=env).returncode == 0
    again = cli("resume", "done", env=env)
    assert again.returncode == 2 and "already finished" in again.stderr
    dup = cli("search", "--budget", "5", "--run-id", "done", env=env)
    assert dup.returncode == 2 and "already exists" in dup.stderr
    assert json.loads(cli("runs", "--json", env=env).stdout)[0]["evaluations"] == 5


@pytest.mark.e2e
def test_the_installed_command_in_a_subprocess(env: dict[str, str]) -> None:
    """The real entry point, as a user runs it: a search, then a one-line error with exit code 2."""
    done = run_cli(["search", "--strategy", "random", "--budget", "4", "--run-id", "sub", "--json"], env=env,
                   in_process=False)
    assert done.returncode == 0 and json.loads(done.stdout)["evaluations"] == 4, done.stderr
    bad = run_cli(["search", "--budget", "0"], env=env, in_process=False)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
