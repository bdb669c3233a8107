"""Fashion-MNIST and MNIST-format (IDX) data for the train evaluator, the codes:PATH strategy, and tables of a
subset of the NB201 cells (the project's own Fashion-MNIST ground truth)."""

from __future__ import annotations

import csv
import gzip
import json
import os
import random
from pathlib import Path

import numpy as np
import pytest

from collm_nas.core.errors import UserError
from collm_nas.evaluators import datasets as ds
from collm_nas.evaluators.datasets import check_dataset_available, load_dataset, read_idx, subset_train
from collm_nas.evaluators.nb201_table import NB201TableEvaluator, load_table

from cli_runner import run_cli

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "benchmarks" / "fmnist_nb201_ground_truth.csv"


# ------------------------------------------------------------------ IDX files
def write_idx(path: Path, array: np.ndarray, *, gz: bool = False) -> Path:
    """``array`` as an IDX file (the format's big-endian header and data)."""
    codes = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(">i2"): 0x0B, np.dtype(">i4"): 0x0C,
             np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}
    big = array.astype(array.dtype.newbyteorder(">")) if array.dtype.itemsize > 1 else array
    raw = bytes([0, 0, codes[big.dtype], array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes() + big.tobytes()
    if gz:
        raw = gzip.compress(raw)
        path = path.with_name(path.name + ".gz")
    path.write_bytes(raw)
    return path


def learnable_set(n: int, seed: int, classes: int = 4, size: int = 12) -> tuple[np.ndarray, np.ndarray]:
    """Images whose class is a bright horizontal band at a class-specific height, with noise: easy to learn."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    rng.shuffle(y)
    x = rng.integers(0, 60, size=(n, size, size)).astype(np.int32)
    band = size // classes
    for i, c in enumerate(y):
        x[i, c * band:(c + 1) * band, :] += 150
    return np.clip(x, 0, 255).astype(np.uint8), y.astype(np.uint8)


def write_idx_folder(folder: Path, train: int = 400, test: int = 100, *, gz: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    x, y = learnable_set(train, 0)
    tx, ty = learnable_set(test, 1)
    write_idx(folder / "train-images-idx3-ubyte", x, gz=gz)
    write_idx(folder / "train-labels-idx1-ubyte", y, gz=gz)
    write_idx(folder / "t10k-images-idx3-ubyte", tx, gz=gz)
    write_idx(folder / "t10k-labels-idx1-ubyte", ty, gz=gz)
    return folder


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip(tmp_path: Path, gz: bool, dtype) -> None:
    array = (np.arange(2 * 3 * 5) - 7).reshape(2, 3, 5).astype(dtype)
    if dtype == np.uint8:
        array = np.arange(30, dtype=np.uint8).reshape(2, 3, 5)
    path = write_idx(tmp_path / "a-idx3", array, gz=gz)
    back = read_idx(path, 3)
    assert back.shape == (2, 3, 5) and back.dtype.isnative and np.array_equal(back, array)
    labels = write_idx(tmp_path / "l-idx1", np.array([3, 1, 4], dtype=np.uint8), gz=gz)
    assert read_idx(labels).tolist() == [3, 1, 4]


def _one_line_error(path: Path, ndim: int | None = None) -> str:
    with pytest.raises(UserError) as info:
        read_idx(path, ndim)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


def test_idx_malformed_files_are_one_line(tmp_path: Path) -> None:
    good = write_idx(tmp_path / "good", np.zeros((4, 3, 3), dtype=np.uint8))
    raw = good.read_bytes()

    bad_magic = tmp_path / "magic"
    bad_magic.write_bytes(b"\x01\x02" + raw[2:])
    assert "magic number" in _one_line_error(bad_magic)
    bad_type = tmp_path / "type"
    bad_type.write_bytes(raw[:2] + b"\x07" + raw[3:])
    assert "magic number" in _one_line_error(bad_type)

    truncated = tmp_path / "truncated"
    truncated.write_bytes(raw[:-5])
    assert "truncated" in _one_line_error(truncated)
    longer = tmp_path / "longer"
    longer.write_bytes(raw + b"\x00")
    assert "longer than its header" in _one_line_error(longer)
    header = tmp_path / "header"
    header.write_bytes(raw[:9])
    assert "header is truncated" in _one_line_error(header)
    tiny = tmp_path / "tiny"
    tiny.write_bytes(b"\x00")
    assert "shorter than" in _one_line_error(tiny)
    assert "dimensions, expected 1" in _one_line_error(good, 1)

    gz_truncated = tmp_path / "cut.gz"
    gz_truncated.write_bytes(gzip.compress(raw)[:-12])
    assert "gzip" in _one_line_error(gz_truncated)
    assert "not found" in _one_line_error(tmp_path / "absent")


def test_idx_folder_loads_with_splits(tmp_path: Path) -> None:
    folder = write_idx_folder(tmp_path / "set", gz=True)
    data = load_dataset(f"idx:{folder}")
    assert data.input_shape == (1, 12, 12) and data.num_classes == 4 and data.augment is False
    assert len(data.train_y) == 360 and len(data.valid_y) == 40 and len(data.test_y) == 100
    assert np.bincount(data.valid_y.numpy()).tolist() == [10, 10, 10, 10]  # stratified
    assert abs(float(data.train_x.mean())) < 1e-4  # normalised with the training split's statistics
    again = load_dataset(f"idx:{folder}", image_size=8)
    assert again.input_shape == (1, 8, 8)

    small = subset_train(data, 100)
    assert len(small.train_y) == 100 and np.bincount(small.train_y.numpy()).tolist() == [25] * 4
    assert small.valid_x is data.valid_x and subset_train(data, 0) is data
    assert subset_train(data, 100).train_y.tolist() == small.train_y.tolist()  # seeded: the same subset


def test_idx_folder_plain_files_and_disagreeing_counts(tmp_path: Path) -> None:
    folder = write_idx_folder(tmp_path / "plain", gz=False)
    check_dataset_available(f"idx:{folder}")
    assert len(load_dataset(f"idx:{folder}").test_y) == 100
    write_idx(folder / "t10k-labels-idx1-ubyte", np.zeros(7, dtype=np.uint8))
    with pytest.raises(UserError, match="disagree: 100 images but 7 labels"):
        ds.load_idx_folder(folder)


def test_fashion_mnist_missing_names_the_package_and_the_setting(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(UserError) as info:
        check_dataset_available("fashion-mnist", tmp_path)
    message = str(info.value)
    assert "apt-get install dataset-fashion-mnist" in message and "--data-dir" in message
    assert "COLLM_NAS_DATA_DIR" in message and "\n" not in message
    monkeypatch.setattr(ds, "FASHION_MNIST_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(UserError, match="apt-get install dataset-fashion-mnist"):
        check_dataset_available("fashion-mnist", None)
    # the data folder may hold the files directly or in fashion-mnist/
    write_idx_folder(tmp_path / "fashion-mnist")
    check_dataset_available("fashion-mnist", tmp_path)
    data = load_dataset("fashion-mnist", data_dir=tmp_path)
    assert data.name == "fashion-mnist" and len(data.valid_y) == 40


def test_dataset_names() -> None:
    ds.check_dataset_name("fashion-mnist")
    ds.check_dataset_name("idx:/data/mnist")
    with pytest.raises(UserError, match="fashion-mnist, idx:PATH"):
        ds.check_dataset_name("fmnist")
    with pytest.raises(UserError, match="train option train_size must not be negative"):
        from collm_nas.evaluators.trainer import TrainConfig

        TrainConfig(train_size=-1)


# ------------------------------------------------------------------------ CLI
@pytest.fixture
def env(tmp_path: Path, table_path: str) -> dict[str, str]:
    e = dict(os.environ)
    e.pop("COLLM_NAS_DATA_DIR", None)
    e.update(COLLM_NAS_RUNS_DIR=str(tmp_path / "runs"), COLLM_NAS_NB201_TABLE=table_path,
             PYTHONPATH=str(ROOT / "tests"))
    return e


def _one_line_exit_2(out) -> str:
    assert out.returncode == 2, (out.stdout, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    return lines[0]


def test_cli_missing_fashion_mnist_is_one_line(env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    out = run_cli(["search", "--evaluator", "train", "--dataset", "fashion-mnist", "--data-dir", tmp_path / "empty",
                   "--budget", "1", "--no-progress"], env=env)
    line = _one_line_exit_2(out)
    assert "apt-get install dataset-fashion-mnist" in line and "--data-dir" in line
    out = run_cli(["search", "--evaluator", "train", "--dataset", f"idx:{tmp_path / 'absent'}", "--budget", "1",
                   "--no-progress"], env=env)
    assert "does not exist" in _one_line_exit_2(out)


def test_cli_malformed_idx_file_is_one_line(env: dict[str, str], tmp_path: Path) -> None:
    folder = write_idx_folder(tmp_path / "broken", gz=False)
    bad = folder / "train-images-idx3-ubyte"
    bad.write_bytes(bad.read_bytes()[:-100])
    out = run_cli(["search", "--evaluator", "train", "--dataset", f"idx:{folder}", "--budget", "1",
                   "--train-option", "epochs=1", "--no-progress"], env=env)
    line = _one_line_exit_2(out)
    assert str(bad) in line and "truncated" in line


def test_cli_trains_on_an_idx_folder(env: dict[str, str], tmp_path: Path) -> None:
    """Real training on a learnable synthetic IDX set: well above chance (25%) on validation and test."""
    folder = write_idx_folder(tmp_path / "learnable", train=600, test=200)
    codes = tmp_path / "codes.txt"
    codes.write_text("# two cells\n333333\n|nor_conv_1x1~0|+|skip_connect~0|nor_conv_3x3~1|+|skip_connect~0|"
                     "nor_conv_1x1~1|nor_conv_3x3~2|\n")
    out = run_cli(["search", "--evaluator", "train", "--dataset", f"idx:{folder}", "--strategy", f"codes:{codes}",
                   "--budget", "2", "--run-id", "idx-train", "--json", "--no-progress",
                   "--train-option", "epochs=6", "--train-option", "train_size=300", "--train-option", "batch_size=32",
                   "--train-option", "threads=1", "--train-option", "latency_repeats=1"], env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    shown = json.loads(run_cli(["show", "idx-train", "--format", "json"], env=env).stdout)
    trials = shown["trials"]
    assert [t["ncode"] for t in trials] == ["333333", "213123"]  # the file's order
    for t in trials:
        assert t["status"] == "ok"
        assert t["valid_acc"] > 60 and t["test_acc"] > 60 and t["train_acc"] > 40 and t["train_s"] > 0


@pytest.mark.parametrize("evaluator,options,metric", [
    ("supernet", ["epochs=8", "batch_size=32", "threads=1", "calib_batches=2", "cache_dir={tmp}/cache"], "valid_acc"),
    ("proxy", ["channels=8", "cells=1", "batch_size=16", "threads=1"], None),
])
def test_cli_supernet_and_proxy_on_an_idx_folder(env: dict[str, str], tmp_path: Path, evaluator: str,
                                                 options: list[str], metric: str | None) -> None:
    folder = write_idx_folder(tmp_path / "set", train=300, test=60)
    args = ["search", "--evaluator", evaluator, "--dataset", f"idx:{folder}", "--strategy", "random", "--budget", "2",
            "--run-id", evaluator, "--json", "--no-progress"]
    for option in options:
        args += ["--train-option", option.format(tmp=tmp_path)]
    out = run_cli(args, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    trials = json.loads(run_cli(["show", evaluator, "--format", "json"], env=env).stdout)["trials"]
    assert len(trials) == 2 and all(t["status"] == "ok" for t in trials)
    if metric:
        assert all(t[metric] > 40 for t in trials), [t[metric] for t in trials]  # the supernet's weights beat chance on the learnable set


# ------------------------------------------------------------- codes:PATH
def test_codes_file_errors_and_parsing(tmp_path: Path) -> None:
    from collm_nas.agents.codes_list import read_codes_file
    from collm_nas.agents.registry import STRATEGIES
    from collm_nas.spaces.nb201 import NB201Space

    path = tmp_path / "c.txt"
    path.write_text("333333  # a comment\n\n333333\n|skip_connect~0|+|none~0|none~1|+|none~0|none~1|none~2|\n")
    assert read_codes_file(path, NB201Space()) == ["333333", "100000"]
    path.write_text("33333x\n")
    with pytest.raises(UserError, match="line 1: '33333x' is no nb201 NCode"):
        read_codes_file(path, NB201Space())
    path.write_text("# nothing\n")
    with pytest.raises(UserError, match="lists no architecture"):
        read_codes_file(path)
    with pytest.raises(UserError, match="codes file .* not found"):
        STRATEGIES.resolve(f"codes:{tmp_path / 'absent.txt'}")
    assert STRATEGIES.resolve(f"codes:{path}").name == f"codes:{path}"


def test_codes_generator_skips_what_was_evaluated_and_what_is_illegal(tmp_path: Path) -> None:
    """What makes a resumed run go on where it stopped: codes already in the history are never proposed again."""
    from types import SimpleNamespace

    from collm_nas.agents.codes_list import codes_list
    from collm_nas.spaces.nb201 import NB201Space

    path = tmp_path / "cells.txt"
    path.write_text("444444\n111111\n333333\n123412\n000100\n")
    done, illegal = {"444444", "333333"}, {"123412"}
    ctx = SimpleNamespace(space=NB201Space(), is_new_and_legal=lambda c: c not in done and c not in illegal,
                          network_key=lambda c: c)  # a run that evaluates every code
    strategy = codes_list(path)
    plan = strategy.navigator.navigate(ctx)
    assert strategy.generator.generate(plan, 5, ctx) == ["111111", "000100"]
    assert strategy.generator.generate(plan, 1, ctx) == ["111111"]
    done |= {"111111", "000100"}
    assert strategy.generator.generate(plan, 3, ctx) == []


def test_codes_strategy_evaluates_the_list_in_order(env: dict[str, str], tmp_path: Path) -> None:
    codes = ["444444", "111111", "333333", "123412", "000100", "222222"]
    path = tmp_path / "cells.txt"
    path.write_text("\n".join(codes) + "\n")
    out = run_cli(["search", "--strategy", f"codes:{path}", "--budget", "6", "--batch-size", "2", "--run-id",
                   "listed", "--json"], env=env)
    assert out.returncode == 0, out.stderr
    shown = json.loads(run_cli(["show", "listed", "--format", "json"], env=env).stdout)
    assert [t["ncode"] for t in shown["trials"]] == codes


# ------------------------------------------------------ partial results tables
def _partial_table(path: Path, codes: list[str]) -> Path:
    from collm_nas.spaces.nb201 import NB201Space

    space = NB201Space()
    rng = random.Random(0)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["arch", "fmnist_valid", "fmnist_test", "seeds", "params_mb_fmnist", "flops_m_fmnist"])
        for code in codes:
            w.writerow([space.format_arch(code), f"{rng.uniform(70, 90):.2f}", f"{rng.uniform(70, 90):.2f}", "1",
                        "0.05", "3.0"])
    return path


def _some_cells(n: int, seed: int = 1) -> list[str]:
    from collm_nas.spaces.nb201 import NB201Space

    space, rng = NB201Space(), random.Random(seed)
    out: list[str] = []
    while len(out) < n:
        code = space.sample(rng)
        if not space.format_problems(code) and not list(space.structural_problems(code)) and code not in out:
            out.append(code)
    return out


def test_partial_table_loads_and_refuses_unknown_cells(tmp_path: Path) -> None:
    cells = _some_cells(30)
    path = _partial_table(tmp_path / "gt.csv", cells)
    table = load_table(str(path))
    assert not table.complete and len(table.rows) == 30 and table.datasets() == ("fashion-mnist",)
    ev = NB201TableEvaluator(path, dataset="fashion-mnist")
    assert ev.searched_metric == "fmnist_valid" and ev.reported_metric == "fmnist_test"
    assert "fmnist_valid" in ev.metric_names and "cifar10_valid" not in ev.metric_names
    assert ev.problem(cells[0]) is None
    outside = next(c for c in _some_cells(60, seed=2) if c not in cells)
    assert "not in the table gt.csv" in ev.problem(outside)
    known, unknown = ev.evaluate([cells[0], outside])
    assert known.status == "ok" and known.metrics["fmnist_valid"] == table.value(cells[0], "fmnist_valid")
    assert known.metrics["params_mb"] == 0.05
    assert unknown.status == "failed" and "not in the table" in unknown.error
    with pytest.raises(UserError, match="has no cifar10 columns .*use --dataset fashion-mnist"):
        NB201TableEvaluator(path, dataset="cifar10")


def test_search_on_a_partial_table_proposes_only_its_cells(env: dict[str, str], tmp_path: Path) -> None:
    cells = _some_cells(30)
    path = _partial_table(tmp_path / "gt.csv", cells)
    for strategy in ("random", "rea", "local"):
        out = run_cli(["search", "--table", path, "--dataset", "fashion-mnist", "--strategy", strategy, "--budget",
                       "25", "--run-id", f"part-{strategy}", "--json"], env=env)
        assert out.returncode == 0, out.stderr
        shown = json.loads(run_cli(["show", f"part-{strategy}", "--format", "json"], env=env).stdout)
        trials = shown["trials"]
        assert len(trials) == 25 and all(t["status"] == "ok" and t["ncode"] in cells for t in trials)
    # more budget than cells: refused before it starts, the table's cells counted as the legal ones
    out = run_cli(["search", "--table", path, "--dataset", "fashion-mnist", "--strategy", "random", "--budget",
                   "40", "--run-id", "part-all", "--json"], env=env)
    assert "only 30 legal architectures" in _one_line_exit_2(out)
    out = run_cli(["search", "--table", path, "--budget", "5"], env=env)  # the default dataset, cifar10
    assert "use --dataset fashion-mnist" in _one_line_exit_2(out)


def test_shipped_ground_truth_loads_and_a_search_runs(env: dict[str, str]) -> None:
    table = load_table(str(SHIPPED))
    assert not table.complete and len(table.rows) >= 100
    valid = [table.value(c, "fmnist_valid") for c in table.rows]
    assert max(valid) - min(valid) > 5  # strong and weak cells
    ev = NB201TableEvaluator(SHIPPED, dataset="fashion-mnist")
    assert ev.resources(next(iter(table.rows)))["params_mb"] > 0
    out = run_cli(["search", "--table", SHIPPED, "--dataset", "fashion-mnist", "--strategy", "rea", "--budget", "30",
                   "--run-id", "shipped", "--json"], env=env)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["evaluations"] == 30 and data["searched_metric"] == "fmnist_valid"
    assert data["best"]["ncode"] in table.rows


# --------------------------------------------------------------- real files
@pytest.mark.slow
def test_real_fashion_mnist_from_the_debian_package() -> None:
    """Debian's dataset-fashion-mnist: 60,000 + 10,000 images; .ci/run installs it (COLLM_NAS_REQUIRE_FMNIST=1)."""
    try:
        check_dataset_available("fashion-mnist")
    except UserError as e:
        if os.environ.get("COLLM_NAS_REQUIRE_FMNIST") == "1":
            pytest.fail(f"COLLM_NAS_REQUIRE_FMNIST=1 but {e}")
        pytest.skip(str(e))
    data = load_dataset("fashion-mnist")
    assert data.input_shape == (1, 28, 28) and data.num_classes == 10
    assert (len(data.train_y), len(data.valid_y), len(data.test_y)) == (50_000, 10_000, 10_000)
    assert np.bincount(data.valid_y.numpy()).tolist() == [1000] * 10
    from collm_nas.evaluators.trainer import TrainConfig, train_architecture

    small = subset_train(load_dataset("fashion-mnist", image_size=16), 5000)
    out = train_architecture("nb201", "333333", small, TrainConfig(epochs=2, batch_size=64, lr=0.1, threads=1,
                                                                   latency_repeats=1))
    assert out.metrics["valid_acc"] > 65 and out.metrics["test_acc"] > 65
