"""The weight-sharing supernet: SPOS training, inherited weights, BatchNorm recalibration,
the cache file every trial and resumed search reuses, and searches through the real CLI.

Tiny supernets (C=4, N=1, one or two epochs on 16x16 digits) keep each test to seconds.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from collm_nas import Workspace
from collm_nas.core.errors import UserError
from collm_nas.evaluators import EVALUATORS
from collm_nas.evaluators.datasets import load_dataset
from collm_nas.evaluators.supernet import (
    FewShotSupernet,
    NB201Supernet,
    PathSampler,
    SupernetConfig,
    SupernetEvaluator,
    calibration_batches,
    evaluate_inherited,
    inherit,
    load_or_train_supernet,
    recalibrate_bn,
    sample_path,
    supernet_cache_path,
    train_supernet,
)
from collm_nas.models import NB201Network
from collm_nas.spaces import SPACES
from collm_nas.spaces.nb201 import cell_function, reaches_output

TINY = dict(channels=4, cells=1, epochs=3, lr=0.1, threads=1, device="cpu", latency_repeats=1, calib_batches=2)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def trained(digits):
    return train_supernet(digits, SupernetConfig(**TINY))


def test_sampled_paths_are_legal_and_cover_every_operation() -> None:
    rng = random.Random(0)
    codes = [sample_path(rng) for _ in range(400)]
    assert all(reaches_output(c) for c in codes)
    assert all({c[k] for c in codes} == set("01234") for k in range(6))
    assert codes == [sample_path(r) for r in [random.Random(0)] for _ in range(400)]


def test_network_sampling_draws_every_network_alike_and_a_fixed_edge_holds() -> None:
    draws = 30_000
    codes, networks = PathSampler(random.Random(1), "codes"), PathSampler(random.Random(1), "networks")
    by_code = [codes() for _ in range(draws)]
    by_network = [networks() for _ in range(draws)]
    assert all(reaches_output(c) for c in by_network)

    def commonest_share(codes: list[str]) -> float:
        counts: dict[str, int] = {}
        for code in codes:
            counts[cell_function(code)] = counts.get(cell_function(code), 0) + 1
        return max(counts.values()) / len(codes)

    # Uniform codes: the one-operation network op(x) alone is written by over a hundred codes (dead edges,
    # skips); uniform networks: each of the 4,929 networks has a share of 1/4929 (0.0002; a few draws by chance).
    assert commonest_share(by_code) > 0.005
    assert commonest_share(by_network) < 0.001
    assert len({cell_function(c) for c in by_network}) > len({cell_function(c) for c in by_code})
    again = PathSampler(random.Random(1), "networks")
    assert [again() for _ in range(50)] == by_network[:50]  # seeded
    for sampling in ("codes", "networks"):
        sampler = PathSampler(random.Random(2), sampling, (3, 0))
        fixed = [sampler() for _ in range(300)]
        assert all(c[3] == "0" and reaches_output(c) for c in fixed)
        # Every other edge still varies (by network, 'none' on 2->3 as well is rare: few networks have it).
        assert all(len({c[k] for c in fixed}) >= 4 for k in (0, 1, 2, 4, 5))


def test_few_shot_supernet_parts_start_from_the_one_shot_weights_and_are_cached(tmp_path: Path, digits) -> None:
    config = SupernetConfig(**{**TINY, "epochs": 1, "split_edge": 3, "split_epochs": 1})
    model, info = load_or_train_supernet("digits", digits, config, cache_dir=tmp_path)
    assert isinstance(model, FewShotSupernet) and info.trained and len(model.parts) == 5
    assert info.meta["steps"] == 6 * (len(digits.train_y) // 64)  # one one-shot epoch, then one per part
    assert [p["operation"] for p in info.meta["parts"]] == ["none", "skip_connect", "nor_conv_1x1",
                                                            "nor_conv_3x3", "avg_pool_3x3"]
    stems = [part.stem[0].weight for part in model.parts]
    assert not any(torch.equal(stems[0], w) for w in stems[1:])  # each part trained on its own paths
    # A code's weights come from the part of its operation on the split edge.
    x = digits.valid_x[:16]
    with torch.no_grad():
        for code in ("312043", "310043"):
            net = inherit(model, code).eval()
            assert torch.equal(net(x), model.parts[int(code[3])](x, code))
    # The cache file holds all five parts; a one-shot supernet of the same epochs is another file.
    again, loaded = load_or_train_supernet("digits", digits, config, cache_dir=tmp_path)
    assert not loaded.trained and isinstance(again, FewShotSupernet)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    one_shot = SupernetConfig(**{**TINY, "epochs": 1})
    assert supernet_cache_path("digits", one_shot, tmp_path) != supernet_cache_path("digits", config, tmp_path)


def test_no_calibration_keeps_the_supernets_statistics(digits, trained) -> None:
    supernet, _ = trained
    kept = evaluate_inherited(supernet, "333132", digits, SupernetConfig(**{**TINY, "calib_batches": 0}))
    net = inherit(supernet, "333132").eval()
    with torch.no_grad():
        expected = 100.0 * float((net(digits.valid_x).argmax(1) == digits.valid_y).float().mean())
    assert kept["valid_acc"] == pytest.approx(expected, abs=1e-6)
    recalibrated = evaluate_inherited(supernet, "333132", digits, SupernetConfig(**TINY))
    assert recalibrated["valid_acc"] != kept["valid_acc"]


@pytest.mark.e2e
def test_supernet_trains_and_is_deterministic(digits, trained) -> None:
    model, figures = trained
    assert isinstance(model, NB201Supernet) and not model.training
    assert figures["steps"] == 3 * (len(digits.train_y) // 64)
    # Three epochs of a C=4 supernet: well above chance (10%, loss ln 10 = 2.30), on sampled paths and inherited.
    assert figures["final_train_acc"] > 15.0 and figures["final_train_loss"] < 2.25, figures
    assert evaluate_inherited(model, "333132", digits, SupernetConfig(**TINY))["valid_acc"] > 15.0
    again, _ = train_supernet(digits, SupernetConfig(**TINY))
    a, b = model.state_dict(), again.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    other, _ = train_supernet(digits, SupernetConfig(**{**TINY, "epochs": 1, "seed": 1}))
    assert not torch.equal(other.state_dict()["classifier.weight"], a["classifier.weight"])


def test_inherited_network_is_the_standalone_network_with_the_supernets_weights(digits, trained) -> None:
    supernet, _ = trained
    net = inherit(supernet, "312043")
    standalone = NB201Network("312043", channels=4, cells_per_stage=1, in_channels=1)
    assert type(net) is NB201Network and net.ops == standalone.ops
    assert sum(p.numel() for p in net.parameters()) == sum(p.numel() for p in standalone.parameters())
    supernet.eval()
    net.eval()
    x = digits.valid_x[:32]
    with torch.no_grad():
        assert torch.equal(net(x), supernet(x, "312043"))
    # Copies: changing the inherited network leaves the supernet alone.
    with torch.no_grad():
        next(net.parameters()).add_(1.0)
    assert not torch.equal(next(net.parameters()), next(supernet.parameters()))


def test_bn_recalibration_changes_the_running_statistics(digits, trained) -> None:
    supernet, _ = trained
    net = inherit(supernet, "333132")
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    before = [(m.running_mean.clone(), m.running_var.clone()) for m in bns]
    batches = calibration_batches(digits, SupernetConfig(**TINY))
    recalibrate_bn(net, batches)
    assert not net.training
    changed = [not torch.allclose(m.running_mean, mean) or not torch.allclose(m.running_var, var)
               for m, (mean, var) in zip(bns, before)]
    assert all(changed)
    # The statistics are the exact mean over the calibration images (cumulative average), e.g. the stem's BN:
    with torch.no_grad():
        stem = torch.cat([net.stem[0](b) for b in batches])
    assert torch.allclose(bns[0].running_mean, stem.mean(dim=(0, 2, 3)), atol=1e-5)
    assert bns[0].momentum == 0.1  # restored


def test_inherited_evaluation_is_deterministic(digits, trained) -> None:
    supernet, _ = trained
    config = SupernetConfig(**TINY)
    a = evaluate_inherited(supernet, "333132", digits, config)
    b = evaluate_inherited(supernet, "333132", digits, config)
    assert {k: v for k, v in a.items() if k != "latency_ms"} == {k: v for k, v in b.items() if k != "latency_ms"}
    assert 0.0 <= a["valid_acc"] <= 100.0 and a["params"] > 0 and a["flops"] > 0


def test_supernet_is_trained_once_and_reused_from_its_cache(tmp_path: Path, digits) -> None:
    options = {**TINY, "cache_dir": str(tmp_path / "cache")}
    space = SPACES.resolve("nb201")
    first = EVALUATORS.resolve("supernet", space, dataset="digits", options=options)
    assert isinstance(first, SupernetEvaluator) and first.estimate_cost("333132") == {}
    r1, r2 = first.evaluate(["333132", "101300"])
    assert r1.status == r2.status == "ok"
    assert r1.cost["supernet_train_s"] > 0 and "supernet_train_s" not in r2.cost  # the first evaluation pays
    assert r1.cost["wall_s"] >= r1.cost["supernet_train_s"]
    path = first.cache_path
    assert path.is_file() and path.parent == tmp_path / "cache"
    stamp = path.stat().st_mtime_ns
    assert first.estimate_cost("212221")["eval_s"] > 0

    second = EVALUATORS.resolve("supernet", space, dataset="digits", options=options)
    [again] = second.evaluate(["333132"])
    assert "supernet_train_s" not in again.cost and again.cost["supernet_load_s"] >= 0
    assert not second.info.trained and path.stat().st_mtime_ns == stamp
    assert again.metrics["valid_acc"] == r1.metrics["valid_acc"]

    # Other training settings are another supernet; evaluation settings are not.
    assert supernet_cache_path("digits", SupernetConfig(**{**options, "epochs": 5})) != path
    assert supernet_cache_path("digits", SupernetConfig(**{**options, "calib_batches": 5})) == path


def test_bad_codes_fail_their_trial_and_bad_options_are_one_line(tmp_path: Path) -> None:
    space = SPACES.resolve("nb201")
    ev = EVALUATORS.resolve("supernet", space, dataset="digits",
                        options={**TINY, "cache_dir": str(tmp_path)})
    degenerate, malformed = ev.evaluate(["000000", "33"])
    assert degenerate.status == malformed.status == "failed"
    assert "degenerate" in degenerate.error and "\n" not in malformed.error
    for options, message in (({"epochs": 0}, "at least 1"), ({"epoch": 3}, "unknown supernet option 'epoch'"),
                             ({"lr": "fast"}, "needs a number"), ({"sampling": "paths"}, "codes or networks"),
                             ({"split_edge": 3}, "needs both split_edge"), ({"split_epochs": 2}, "needs both"),
                             ({"split_edge": 6, "split_epochs": 1}, "an edge 0-5")):
        with pytest.raises(UserError, match=message):
            EVALUATORS.resolve("supernet", space, dataset="digits", options=options)
    with pytest.raises(UserError, match="nb201"):
        EVALUATORS.resolve("supernet", SPACES.resolve("mbv3"), dataset="digits")
    with pytest.raises(UserError, match="no test split"):
        EVALUATORS.resolve("supernet", space, dataset="digits", metric="test_acc")
    diverging = EVALUATORS.resolve("supernet", space, dataset="digits",
                               options={**TINY, "lr": 1e6, "cache_dir": str(tmp_path)})
    with pytest.raises(UserError, match="supernet training diverged"):
        diverging.evaluate(["333132"])


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "collm_nas.cli", *args], capture_output=True, text=True,
                          env=env, timeout=240)


@pytest.mark.e2e
def test_cli_searches_and_an_approved_run_share_one_supernet(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    env = dict(os.environ, COLLM_NAS_RUNS_DIR=str(runs), COLLM_NAS_PROGRESS="never", OMP_NUM_THREADS="1")
    options = [arg for key, value in TINY.items() if key != "device"
               for arg in ("--train-option", f"{key}={value}")]
    out = _cli("search", "--space", "nb201", "--evaluator", "supernet", "--dataset", "digits", "--strategy", "rea",
               "--budget", "12", "--run-id", "sn", *options, "--json", env=env)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["status"] == "finished" and data["evaluations"] == 12 and data["searched_metric"] == "valid_acc"
    assert data["config"]["train_options"]["cache_dir"] == str((runs / "supernets").resolve())
    [cached] = list((runs / "supernets").glob("*.pt"))
    stamp = cached.stat().st_mtime_ns

    trials = Workspace(runs).run("sn").trials()
    assert sum("supernet_train_s" in t.cost for t in trials) == 1  # trained by the first evaluation only
    assert "supernet_train_s" in trials[0].cost and all(t.status == "ok" for t in trials)

    # Another search with the same settings pauses before its first batch (its cost is not known yet);
    # `approve` goes on in a new process, which loads the same file instead of training again.
    paused = _cli("search", "--space", "nb201", "--evaluator", "supernet", "--strategy", "random", "--budget", "6",
                  "--batch-size", "3", "--seed", "1", "--run-id", "sn2", "--approval", "over-cost",
                  "--approval-threshold", "60", *options, "--json", env=env)
    assert paused.returncode == 0, paused.stderr
    assert json.loads(paused.stdout)["status"] == "awaiting approval"
    done = _cli("approve", "sn2", "--decision", "approve", "--json", env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "finished" and json.loads(done.stdout)["evaluations"] == 6
    second = Workspace(runs).run("sn2").trials()
    assert not any("supernet_train_s" in t.cost for t in second)
    assert "supernet_load_s" in second[0].cost
    assert cached.stat().st_mtime_ns == stamp and len(list((runs / "supernets").glob("*.pt"))) == 1

    # Blended with NASWOT, the same supernet: the search ranks by blend, its best is the best blend, and the
    # reference is measured once, beside the supernet; a resumed or later search reads it.
    blended = _cli("search", "--space", "nb201", "--evaluator", "supernet", "--strategy", "random", "--budget", "5",
                   "--seed", "2", "--run-id", "sn3", *options, "--train-option", "blend=naswot",
                   "--train-option", "blend_reference=4", "--json", env=env)
    assert blended.returncode == 0, blended.stderr
    data = json.loads(blended.stdout)
    assert data["status"] == "finished" and data["searched_metric"] == "blend"
    third = Workspace(runs).run("sn3").trials()
    assert all({"blend", "naswot", "valid_acc"} <= set(t.metrics) for t in third)
    assert sum("blend_reference_s" in t.cost for t in third) == 1
    assert data["best"]["ncode"] == max(third, key=lambda t: t.metrics["blend"]).ncode
    [reference] = list((runs / "supernets").glob("*.blend-*.json"))
    assert cached.stat().st_mtime_ns == stamp and len(list((runs / "supernets").glob("*.pt"))) == 1
    wrong = _cli("search", "--space", "nb201", "--evaluator", "supernet", "--budget", "2", "--metric", "blend",
                 *options, env=env)
    assert wrong.returncode == 2 and "blend=naswot" in wrong.stderr and "Traceback" not in wrong.stderr


def test_the_naswot_blend_is_the_mean_of_two_z_scores_on_a_cached_reference(tmp_path: Path) -> None:
    """blend=naswot: each candidate's inherited accuracy and NASWOT score, standardised on seeded reference
    cells measured once (and kept beside the supernet), weighted alike; the same in another evaluator."""
    from collm_nas.evaluators.supernet_blend import BlendReference, blend_score, reference_codes

    space = SPACES.resolve("nb201")
    options = {**TINY, "epochs": 1, "cache_dir": str(tmp_path), "blend": "naswot", "blend_reference": 5}
    first = EVALUATORS.resolve("supernet", space, dataset="digits", options=options)
    assert first.searched_metric == "blend" and "NASWOT" in first.metric_note
    a, b = first.evaluate(["333132", "101300"])
    assert a.status == b.status == "ok"
    assert a.cost["blend_reference_s"] > 0 and "blend_reference_s" not in b.cost  # the first evaluation pays
    [file] = tmp_path.glob("*.blend-*.json")
    reference = BlendReference.from_json(json.loads(file.read_text()))
    assert list(reference.codes) == reference_codes(space, 5, 0) and len(set(reference.codes)) == 5
    assert reference.valid_sd > 0 and reference.proxy_sd > 0
    for trial in (a, b):
        m = trial.metrics
        assert m["blend"] == pytest.approx(((m["valid_acc"] - reference.valid_mean) / reference.valid_sd
                                            + (m["naswot"] - reference.proxy_mean) / reference.proxy_sd) / 2)
        assert m["naswot"] == pytest.approx(first.naswot(trial.ncode))  # the untrained network's score
    # NASWOT here is the proxy evaluator's score of the same network, width and seed
    proxy = EVALUATORS.resolve("proxy", space, dataset="digits",
                               options={"channels": 4, "cells": 1, "device": "cpu", "threads": 1})
    assert proxy.evaluate(["101300"])[0].metrics["naswot"] == pytest.approx(b.metrics["naswot"])

    stamp = file.stat().st_mtime_ns
    second = EVALUATORS.resolve("supernet", space, dataset="digits", options=options)
    [again] = second.evaluate(["101300"])
    assert "blend_reference_s" not in again.cost and file.stat().st_mtime_ns == stamp  # read, not measured
    assert again.metrics["blend"] == b.metrics["blend"]
    # the plain evaluator of the same supernet searches valid_acc and records no blend
    plain = EVALUATORS.resolve("supernet", space, dataset="digits", options={**options, "blend": "none"})
    [same] = plain.evaluate(["101300"])
    assert plain.searched_metric == "valid_acc" and "blend" not in same.metrics
    assert same.metrics["valid_acc"] == b.metrics["valid_acc"]
    assert blend_score(reference.valid_mean, reference.proxy_mean, reference) == 0.0


def test_bad_blend_options_are_one_line(tmp_path: Path) -> None:
    from collm_nas.evaluators.supernet_blend import load_or_measure_reference

    space = SPACES.resolve("nb201")
    for options, message in (({"blend": "synflow"}, "blend must be none or naswot"),
                             ({"blend": "naswot", "blend_reference": 1}, "at least 2 cells")):
        with pytest.raises(UserError, match=message):
            EVALUATORS.resolve("supernet", space, dataset="digits", options=options)
    with pytest.raises(UserError, match="needs the supernet option blend=naswot"):
        EVALUATORS.resolve("supernet", space, dataset="digits", metric="blend")
    with pytest.raises(UserError, match="same accuracy"):
        load_or_measure_reference(None, ["333132", "101300"], lambda code: 50.0, lambda code: float(len(code)))
