"""Real training: data sets, the trainer, failed trials, and a search through the real CLI.

Small networks (C=4-8, N=1) on 16x16 digits and one or two epochs keep every
test to a few seconds on two CPU cores.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from collm_nas import Workspace
from collm_nas.cli import main
from collm_nas.core.errors import UserError
from collm_nas.evaluators import EVALUATORS
from collm_nas.evaluators.datasets import load_cifar, load_dataset, load_digits
from collm_nas.evaluators.trainer import (
    TrainConfig,
    TrainEvaluator,
    TrainingFailed,
    _augment,
    train_architecture,
    train_network,
)
from collm_nas.models import NB201Network
from collm_nas.spaces import SearchSpace, SPACES

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(channels=4, cells=1, epochs=1, threads=1, latency_repeats=2)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


# ---------------------------------------------------------------------- data
def test_digits_are_split_stratified_seeded_and_normalised(digits) -> None:
    assert digits.input_shape == (1, 16, 16) and digits.num_classes == 10 and not digits.has_test
    assert len(digits.train_y) + len(digits.valid_y) == 1797 and len(digits.valid_y) == 359
    assert digits.valid_y.bincount().min() >= 35  # every class in validation
    assert abs(float(digits.train_x.mean())) < 1e-4 and abs(float(digits.train_x.std()) - 1) < 1e-3
    again = load_digits(image_size=16, seed=0)
    assert torch.equal(again.valid_y, digits.valid_y) and torch.equal(again.train_x, digits.train_x)
    other = load_digits(image_size=32, seed=1)
    assert other.input_shape == (1, 32, 32) and not torch.equal(other.valid_y, digits.valid_y)


def _write_cifar(folder: Path, files: list[str], label_key: str, classes: int, per_file: int) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in files:
        labels = [i % classes for i in range(per_file)]
        data = rng.integers(0, 256, size=(per_file, 3072), dtype=np.uint8)
        with open(folder / name, "wb") as fh:
            pickle.dump({b"data": data, label_key.encode(): labels, b"batch_label": name.encode()}, fh)


def test_cifar10_and_cifar100_python_folders_are_read_without_torchvision(tmp_path: Path) -> None:
    _write_cifar(tmp_path / "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"],
                 "labels", 10, 40)
    data = load_cifar("cifar10", tmp_path, valid_size=50)
    assert data.input_shape == (3, 32, 32) and data.num_classes == 10 and data.augment
    assert len(data.train_y) == 150 and len(data.valid_y) == 50 and len(data.test_y) == 40
    assert data.valid_y.bincount().tolist() == [5] * 10  # stratified hold-out
    assert load_cifar("cifar10", tmp_path / "cifar-10-batches-py", valid_size=50, image_size=16).input_shape == (3, 16, 16)

    _write_cifar(tmp_path / "cifar-100-python", ["train", "test"], "fine_labels", 100, 300)
    data = load_cifar("cifar100", tmp_path, valid_size=100)
    assert data.num_classes == 100 and len(data.train_y) == 200 and len(data.test_y) == 300


def test_missing_or_broken_data_is_one_line_naming_the_fix(tmp_path: Path) -> None:
    with pytest.raises(UserError) as err:
        load_dataset("cifar10", data_dir=tmp_path)
    assert "cifar-10-batches-py" in str(err.value) and "--data-dir" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(UserError, match="COLLM_NAS_DATA_DIR"):
        load_dataset("cifar100")
    (tmp_path / "cifar-10-batches-py").mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (tmp_path / "cifar-10-batches-py" / name).write_bytes(b"not a pickle")
    with pytest.raises(UserError, match="cannot read CIFAR file"):
        load_cifar("cifar10", tmp_path)
    with pytest.raises(UserError, match="unknown dataset 'mnist'"):
        load_dataset("mnist")


def test_torchvision_datasets_fail_in_one_line_where_torchvision_does_not_import(tmp_path: Path) -> None:
    try:
        import torchvision  # noqa: F401
    except (ImportError, RuntimeError):
        pass
    else:
        pytest.skip("torchvision imports here")
    for name in ("torchvision:MNIST", f"imagefolder:{tmp_path}"):
        with pytest.raises(UserError, match="needs torchvision") as err:
            load_dataset(name, data_dir=tmp_path)
        assert "\n" not in str(err.value)


# ------------------------------------------------------------------- trainer
@pytest.mark.e2e
def test_training_learns_digits_well_above_chance(digits) -> None:
    out = train_architecture("nb201", "333132", digits, TrainConfig(channels=8, cells=1, epochs=3, threads=1))
    m = out.metrics
    assert m["valid_acc"] > 60.0, m  # chance is 10% on the held-out digits
    assert set(m) == {"valid_acc", "train_acc", "train_loss", "params", "flops", "latency_ms", "params_mb", "flops_m"}
    net = NB201Network("333132", channels=8, cells_per_stage=1, in_channels=1)
    assert m["params"] == sum(p.numel() for p in net.parameters())
    assert m["params_mb"] == m["params"] / 1e6 and m["flops_m"] == m["flops"] / 1e6
    assert m["flops"] > 0 and m["latency_ms"] > 0 and m["train_loss"] < 2.3
    assert out.cost["train_s"] > 0 and out.cost["epochs"] == 3 and out.cost["images_per_s"] > 0


def test_training_is_deterministic_on_cpu(digits) -> None:
    config = TrainConfig(**TINY, seed=7)
    a = train_architecture("nb201", "313213", digits, config)
    b = train_architecture("nb201", "313213", digits, config)
    for key in ("valid_acc", "train_acc", "train_loss", "params", "flops"):
        assert a.metrics[key] == b.metrics[key], key
    c = train_architecture("nb201", "313213", digits, TrainConfig(**TINY, seed=8))
    assert c.metrics["train_loss"] != a.metrics["train_loss"]


def test_mbv3_network_trains(digits) -> None:
    space = SPACES.resolve("mbv3")
    code = space.encode({**{f"s{s}_depth": "2" for s in range(1, 6)},
                         **{f"s{s}_l{i}_{k}": "3" for s in range(1, 6) for i in (1, 2) for k in ("kernel", "expand")}})
    out = train_architecture(space, code, digits, TrainConfig(epochs=1, width_mult=0.25, threads=1, latency_repeats=2))
    assert 0 <= out.metrics["valid_acc"] <= 100 and out.metrics["params"] > 0


def test_nan_loss_exception_and_time_limit_fail_the_trial_not_the_batch(digits) -> None:
    with pytest.raises(TrainingFailed, match="NaN or infinite"):
        train_architecture("nb201", "333132", digits, TrainConfig(**{**TINY, "lr": 1e4}))

    space = SPACES.resolve("nb201")
    absurd = TrainEvaluator(space, "digits", options={**TINY, "lr": "1e4"})
    ok = TrainEvaluator(space, "digits", options=TINY)
    results = absurd.evaluate(["333132", "bad"]) + ok.evaluate(["333132"])
    assert [r.status for r in results] == ["failed", "failed", "ok"]
    assert "NaN" in results[0].error and "\n" not in results[0].error
    assert "malformed NCode" in results[1].error
    assert results[2].metrics["valid_acc"] > 0 and "train_s" in results[2].cost

    slow = TrainEvaluator(space, "digits", options={**TINY, "epochs": 50, "time_limit_s": 0.5})
    [timed_out] = slow.evaluate(["333333"])
    assert timed_out.status == "failed" and "time limit of 0.5s" in timed_out.error

    hooked = TrainEvaluator(space, "digits", options={**TINY, "model_hook": "trainer_hooks:broken"})
    [broken] = hooked.evaluate(["333132"])
    assert broken.status == "failed" and broken.error == "ValueError: the hook itself is broken"


def test_augmentation_crops_and_flips_each_image(digits) -> None:
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    gen = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(20):  # no padding: every image is itself or its mirror image
        out = _augment(x, gen, pad=0)
        for i in range(2):
            assert torch.equal(out[i], x[i]) or torch.equal(out[i], x[i].flip(-1))
            seen.add(torch.equal(out[i], x[i]))
    assert seen == {True, False}
    shifted = _augment(x, gen, pad=1)
    assert shifted.shape == x.shape
    out = train_architecture("nb201", "111111", digits, TrainConfig(**TINY, augment="yes"))
    assert out.metrics["valid_acc"] > 0


def test_train_network_takes_any_module(digits) -> None:
    net = NB201Network("111111", channels=4, cells_per_stage=1, in_channels=1)
    out = train_network(net, digits, TrainConfig(**TINY))
    assert out.metrics["valid_acc"] > 0 and out.cost["epochs"] == 1


def test_train_options_are_checked_in_one_line() -> None:
    config = TrainConfig.from_options({"epochs": "3", "lr": "0.1", "amp": "no", "device": "cpu"})
    assert (config.epochs, config.lr, config.amp, config.device) == (3, 0.1, False, "cpu")
    assert config.to_options() == {"epochs": 3, "lr": 0.1, "amp": False, "device": "cpu"}
    for bad, message in (({"epoch": 3}, "unknown train option 'epoch'"), ({"epochs": "x"}, "whole number"),
                         ({"epochs": 0}, "at least 1"), ({"device": "tpu"}, "device"),
                         ({"model_hook": "nohook"}, "module.path:function")):
        with pytest.raises(UserError, match=message):
            EVALUATORS.resolve("train", SPACES.resolve("nb201"), dataset="digits", options=bad)
    with pytest.raises(UserError, match="no network for space .tiny."):
        EVALUATORS.resolve("train", SearchSpace("tiny", SPACES.resolve("nb201").decisions), dataset="digits")
    with pytest.raises(UserError, match="only to --evaluator train"):
        EVALUATORS.resolve("table", SPACES.resolve("nb201"), dataset="cifar10", options={"table": "x", "epochs": 1})


# ------------------------------------------------------------- whole search
def _cli(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "collm_nas.cli", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The search runs as its own process; show and runs read its database in this one."""
    monkeypatch.setenv("COLLM_NAS_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.delenv("COLLM_NAS_DATA_DIR", raising=False)
    e = dict(os.environ)
    e.update(PYTHONPATH=str(ROOT / "tests"), COLLM_NAS_PROGRESS="never")
    return e


def _main(capsys: pytest.CaptureFixture, *args: str) -> str:
    capsys.readouterr()
    assert main(list(args)) == 0
    return capsys.readouterr().out


@pytest.mark.e2e
def test_cli_search_trains_for_real_and_shows_the_run(env: dict[str, str], capsys: pytest.CaptureFixture) -> None:
    out = _cli("search", "--space", "nb201", "--evaluator", "train", "--dataset", "digits", "--strategy", "rea",
               "--budget", "4", "--train-option", "epochs=1", "--train-option", "channels=4",
               "--train-option", "threads=1", "--json", env=env)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["run_id"].startswith("rea-nb201-digits-") and data["status"] == "finished"
    assert data["evaluations"] == 4 and data["searched_metric"] == "valid_acc"
    assert data["config"]["evaluator"] == "train" and data["config"]["dataset"] == "digits"
    assert data["config"]["train_options"] == {"epochs": "1", "channels": "4", "threads": "1"}
    assert data["best"]["searched"] > 10.0  # above chance after one epoch
    assert {"params", "flops", "latency_ms", "train_loss"} <= set(data["best"]["metrics"])

    shown = json.loads(_main(capsys, "show", data["run_id"], "--format", "json"))
    assert len(shown["trials"]) == 4 and all(t["status"] == "ok" and t["train_s"] > 0 for t in shown["trials"])
    # Several objectives on real training: accuracy against the latency measured here and the parameters.
    out = _cli("search", "--space", "nb201", "--evaluator", "train", "--dataset", "digits", "--strategy", "rea",
               "--budget", "4", "--train-option", "epochs=1", "--train-option", "channels=4",
               "--train-option", "threads=1", "--objective", "valid_acc:max", "--objective", "latency_ms:min",
               "--objective", "params_mb:min", "--run-id", "mo", "--json", env=env)
    assert out.returncode == 0, out.stderr
    mo = json.loads(out.stdout)
    assert mo["objectives"] == ["valid_acc:max", "latency_ms:min", "params_mb:min"] and mo["pareto"]
    assert all({"valid_acc", "latency_ms", "params_mb", "flops_m"} <= set(t["metrics"]) for t in mo["pareto"])
    runs = json.loads(_main(capsys, "runs", "--json"))
    assert runs[0]["dataset"] == "train:digits"


@pytest.mark.e2e
def test_nan_trials_fail_while_the_search_goes_on(env: dict[str, str], capsys: pytest.CaptureFixture) -> None:
    """The hook makes the loss of some architectures NaN in the real forward pass: those trials
    are recorded failed with the reason, the others train, and the search reaches its budget."""
    out = _cli("search", "--evaluator", "train", "--strategy", "random", "--budget", "5", "--seed", "3",
               "--run-id", "nan-run", "--train-option", "model_hook=trainer_hooks:nan_unless_conv_first",
               "--train-option", "epochs=1", "--train-option", "channels=4", "--train-option", "threads=1",
               "--json", env=env)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["status"] == "finished" and data["evaluations"] == 5
    trials = json.loads(_main(capsys, "show", "nan-run", "--format", "json"))["trials"]
    failed = [t for t in trials if t["status"] == "failed"]
    assert failed and len(failed) < 5
    assert all("loss became NaN" in t["error"] for t in failed)
    assert all(t["arch"].split("|")[1].split("~")[0] not in ("nor_conv_1x1", "nor_conv_3x3") for t in failed)
    assert data["best"]["arch"].split("|")[1].split("~")[0] in ("nor_conv_1x1", "nor_conv_3x3")
    table = _main(capsys, "show", "nan-run")
    assert f"failed trials ({len(failed)}):" in table


@pytest.mark.e2e
def test_api_search_on_the_mbv3_space(tmp_path: Path) -> None:
    result = Workspace(tmp_path / "runs").search(
        space="mbv3", evaluator="train", strategy="random", budget=2, seed=1,
        train_options={"epochs": 1, "width_mult": 0.25, "image_size": 8, "batch_size": 128, "threads": 1,
                       "latency_repeats": 1})
    assert result.status == "finished" and result.evaluations == 2
    assert result.run_id.startswith("random-mbv3-digits-") and result.config["dataset"] == "digits"
    best = result.best
    assert len(best.ncode) == 45 and best.arch.count("|") == 4 and best.arch.startswith("k")
    assert SPACES.resolve("mbv3").parse_arch(best.arch) == best.ncode
    assert best.metrics["params"] > 0 and 0 <= best.metrics["valid_acc"] <= 100


@pytest.mark.e2e
def test_missing_data_stops_before_the_run_exists(env: dict[str, str], tmp_path: Path) -> None:
    out = _cli("search", "--evaluator", "train", "--dataset", "cifar10", "--data-dir", str(tmp_path),
               "--budget", "2", env=env)
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert "cifar10 not found" in out.stderr and "--data-dir" in out.stderr
    assert Workspace(tmp_path / "runs").runs() == []
