"""Does the supernet rank? Kendall tau against the Fashion-MNIST ground truth, variant by variant.

The reference is ``benchmarks/fmnist_nb201_ground_truth.csv``: 200 NAS-Bench-201
cells trained from scratch on Fashion-MNIST by collm-nas (see
``fmnist_ground_truth.md``). Every supernet variant is trained on the same
data with the same schedule knobs as those networks (16x16 images, the same
seeded 10,000 training images, batch 128, lr 0.1 with a cosine decay, weight
decay 5e-4, C=8, N=1, one CPU thread), then scores the 200 cells with
inherited weights on the same 10,000 validation images. Per variant it
reports:

* Kendall's tau-b against ``fmnist_valid`` (the mean over the seeds trained),
  and on the 60 cells trained with two seeds against their mean, beside the
  tau of one seed against the other there (how well training ranks itself:
  the ceiling any estimator is held to),
* how many of the truth's top 10 are among the variant's top 10, and the
  truth's accuracy of the variant's best-ranked cell against the table's best,
* the training seconds and epochs (a few-shot supernet counts its parts).

The zero-cost proxies (synflow, NASWOT, grad-norm and their mean rank) of the
same cells on Fashion-MNIST images, and the parameter count, are rows beside
them. So is the supernet evaluator's own blend (``--train-option
blend=naswot``) of the ``--blend-variant`` supernet: its accuracy and the
cell's NASWOT score, standardised on the evaluator's seeded reference cells,
weighted alike (its NASWOT scores and reference go to ``blend-VARIANT.json``).
``--ground-truth benchmarks/fmnist_nb201_heldout.csv`` scores the held-out
cells instead (``fmnist_ground_truth.py --heldout``; none of them was looked at
when a variant or the blend was chosen). Variants are resumable: each writes its own JSON file into
``--out-dir`` (per-cell scores, saved every 25 cells) and supernets go to the
evaluator's cache (``RUNS_DIR/supernets``), so the supernet evaluator reuses
them with the same options; two processes may run disjoint ``--variants``.

    python benchmarks/fmnist_supernet_tau.py                              # every variant, then the table
    python benchmarks/fmnist_supernet_tau.py --variants spos-30 spos-100   # some of them
    python benchmarks/fmnist_supernet_tau.py --table-only                  # print what is measured
    python benchmarks/fmnist_supernet_tau.py --variants spos-30-alldata \
        --ground-truth benchmarks/fmnist_nb201_heldout.csv                 # the held-out cells
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np

from collm_nas.core.settings import load_settings
from collm_nas.evaluators.datasets import load_dataset, subset_train
from collm_nas.evaluators.proxies import PROXIES, ProxyConfig, proxy_scores
from collm_nas.evaluators.ranking import kendall_tau, kendall_tau_null_se, ranks
from collm_nas.evaluators.supernet import (
    SupernetConfig,
    SupernetEvaluator,
    calibration_batches,
    evaluate_inherited,
    load_or_train_supernet,
)
from collm_nas.spaces import SPACES

HERE = Path(__file__).resolve().parent
GROUND_TRUTH = HERE / "fmnist_nb201_ground_truth.csv"
# The ground truth's data and schedule knobs (fmnist_ground_truth.md), shared by every variant.
COMMON = {"batch_size": 128, "lr": 0.1, "weight_decay": 5e-4, "image_size": 16, "train_size": 10_000,
          "channels": 8, "cells": 1, "device": "cpu", "threads": 1, "latency_repeats": 0}
# The few-shot split edge: 0->3, the edge whose operation moves NB201's CIFAR-10 validation accuracy most
# (main effect: a spread of 2.4 points between its operations' means, vs 0.9-2.3 on the other edges).
# Chosen on the CIFAR-10 table, never on the Fashion-MNIST truth.
SPLIT_EDGE = 3
# name -> (what it is, supernet options over COMMON)
VARIANTS: dict[str, tuple[str, dict]] = {
    "spos-30-norecal": ("SPOS, 30 epochs, the supernet's own BatchNorm statistics",
                        {"epochs": 30, "calib_batches": 0}),
    "spos-30": ("SPOS, 30 epochs, BN recalibrated (8 x 64 images)", {"epochs": 30}),
    "spos-100": ("SPOS, 100 epochs", {"epochs": 100}),
    "networks-100": ("uniform over networks (de-isomorphic), 100 epochs", {"epochs": 100, "sampling": "networks"}),
    "fewshot-50+10": (f"few-shot on edge {SPLIT_EDGE}: 50 one-shot epochs, then 10 per part (100 in all)",
                      {"epochs": 50, "split_edge": SPLIT_EDGE, "split_epochs": 10}),
    "fewshot-networks-50+10": (f"few-shot on edge {SPLIT_EDGE} and uniform over networks (100 epochs in all)",
                               {"epochs": 50, "split_edge": SPLIT_EDGE, "split_epochs": 10,
                                "sampling": "networks"}),
    "spos-30-alldata": ("SPOS, 30 epochs over all 50,000 training images (as many steps as 150 epochs)",
                        {"epochs": 30, "train_size": 0}),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--no-proxies", action="store_true", help="skip the zero-cost proxy rows")
    p.add_argument("--out-dir", type=Path, default=None,
                   help="one JSON file per variant (default RUNS_DIR/fmnist-supernet-tau)")
    p.add_argument("--table-only", action="store_true", help="print the table of what is measured; train nothing")
    p.add_argument("--ground-truth", type=Path, default=GROUND_TRUTH)
    p.add_argument("--data-dir", default=None, help="the Fashion-MNIST folder (default Debian's)")
    p.add_argument("--blend-variant", default="spos-30-alldata", choices=list(VARIANTS),
                   help="the supernet whose evaluator blend with NASWOT is a row (default %(default)s)")
    return p.parse_args(argv)


def read_truth(path: Path) -> tuple[list[str], dict[str, dict[str, float]]]:
    space = SPACES.resolve("nb201")
    codes, rows = [], {}
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            code = space.parse_arch(row["arch"])
            codes.append(code)
            rows[code] = {k: float(v) for k, v in row.items() if k != "arch" and v != ""}
    return codes, rows


def _save(path: Path, record: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(record, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def measure_variant(name: str, codes: list[str], data, out_dir: Path) -> dict:
    path = out_dir / f"{name}.json"
    record = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    if len(record.get("valid", {})) == len(codes):
        return record
    config = SupernetConfig(**{**COMMON, **VARIANTS[name][1]})
    train_data = subset_train(data, config.train_size) if config.train_size else data
    supernet, info = load_or_train_supernet("fashion-mnist", train_data, config)
    record.update({"variant": name, "description": VARIANTS[name][0], "options": dataclasses.asdict(config),
                   "train_s": info.train_s, "steps": info.meta.get("steps"),
                   "final_train_acc": info.meta.get("final_train_acc"), "cache": info.path,
                   "epochs": config.epochs + 5 * config.split_epochs})
    record.setdefault("valid", {})
    print(f"{name}: supernet {'trained' if info.trained else 'loaded'} ({info.train_s:.0f} s of training)",
          flush=True)
    calibration = calibration_batches(train_data, config)
    # Validation only: the test split is not ranked here, and scoring it would double the time.
    valid_only = dataclasses.replace(train_data, test_x=None, test_y=None)
    started = time.perf_counter()
    todo = [c for c in codes if c not in record["valid"]]
    for i, code in enumerate(todo, 1):
        record["valid"][code] = evaluate_inherited(supernet, code, valid_only, config,
                                                   calibration=calibration)["valid_acc"]
        if i % 25 == 0 or i == len(todo):
            record["eval_s"] = (time.perf_counter() - started) / i
            _save(path, record)
            print(f"  {name}: {len(record['valid'])}/{len(codes)} cells", flush=True)
    return record


def measure_proxies(codes: list[str], data, out_dir: Path) -> dict:
    path = out_dir / "proxies.json"
    record = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {"scores": {}}
    config = ProxyConfig(channels=8, cells=1, image_size=16, device="cpu", threads=1)
    started = time.perf_counter()
    todo = [c for c in codes if c not in record["scores"]]
    for i, code in enumerate(todo, 1):
        record["scores"][code] = proxy_scores(code, data, config, network=True)
        if i % 50 == 0 or i == len(todo):
            record["s_per_arch"] = (time.perf_counter() - started) / i
            _save(path, record)
    return record


def measure_blend(name: str, codes: list[str], out_dir: Path, data_dir: str | None) -> dict:
    """The evaluator's blend=naswot figures for ``name``'s supernet: its reference and every cell's NASWOT
    score (the accuracy part is the variant's own inherited accuracy, which the evaluator computes alike)."""
    path = out_dir / f"blend-{name}.json"
    record = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {"naswot": {}}
    todo = [c for c in codes if c not in record["naswot"]]
    if not todo and "reference" in record:
        return record
    options = {**COMMON, **VARIANTS[name][1], "blend": "naswot"}
    if data_dir:
        options["data_dir"] = data_dir
    evaluator = SupernetEvaluator(SPACES.resolve("nb201"), "fashion-mnist", options=options)
    reference, measured = evaluator.blend_reference()
    record["reference"] = reference.to_json()
    print(f"blend of {name}: reference of {len(reference.codes)} cells "
          f"{'measured' if measured else 'loaded'} ({reference.measure_s:.0f} s)", flush=True)
    started = time.perf_counter()
    for code in todo:
        record["naswot"][code] = evaluator.naswot(code)
    if todo:
        record["naswot_s"] = (time.perf_counter() - started) / len(todo)
    _save(path, record)
    return record


def top_overlap(scores: list[float], truth: list[float], k: int = 10) -> int:
    top = lambda values: set(np.argsort(-np.asarray(values), kind="mergesort")[:k].tolist())  # noqa: E731
    return len(top(scores) & top(truth))


def row(label: str, scores: list[float], codes: list[str], truth: dict[str, dict[str, float]], cost: str) -> str:
    valid = [truth[c]["fmnist_valid"] for c in codes]
    paired = [i for i, c in enumerate(codes) if truth[c].get("seeds", 1) >= 2]
    picked = codes[int(np.argmax(scores))]
    tau_paired = (f"{kendall_tau([scores[i] for i in paired], [valid[i] for i in paired]):.3f}" if len(paired) > 1
                  else "–")
    return (f"| {label} | {kendall_tau(scores, valid):.3f} | {tau_paired} | "
            f"{top_overlap(scores, valid)} / 10 | {truth[picked]['fmnist_valid']:.2f} | {cost} |")


def print_table(codes: list[str], truth: dict[str, dict[str, float]], records: dict[str, dict],
                proxies: dict | None, blend: dict | None = None) -> None:
    valid = [truth[c]["fmnist_valid"] for c in codes]
    paired = [c for c in codes if truth[c].get("seeds", 1) >= 2]
    seed_tau = "–"
    if len(paired) > 1:
        tau = kendall_tau([truth[c]["fmnist_valid_seed0"] for c in paired],
                          [truth[c]["fmnist_valid_seed1"] for c in paired])
        seed_tau = f"{tau:.3f}"
    print(f"{len(codes)} ground-truth cells (best fmnist_valid {max(valid):.2f}%, median "
          f"{statistics.median(valid):.2f}%), {len(paired)} with two seeds; load average "
          f"{os.getloadavg()[0]:.1f}")
    print()
    print(f"| ranking | tau, {len(codes)} cells | tau, {len(paired)} two-seed cells | top-10 overlap | "
          "truth of its best pick | cost |")
    print("|---|---|---|---|---|---|")
    print(f"| stand-alone training, seed 0 vs seed 1 (the ceiling) | – | {seed_tau} | – | – | "
          f"{statistics.mean(truth[c]['train_s'] for c in codes):.0f} s a cell |")
    measured = {}
    for name in VARIANTS:
        record = records.get(name)
        if not record or len(record.get("valid", {})) < len(codes):
            continue
        scores = measured[name] = [record["valid"][c] for c in codes]
        cost = f"{record['train_s']:.0f} s once ({record['epochs']} epochs) + {record['eval_s']:.2f} s a cell"
        print(row(f"`{name}`: {record['description']}", scores, codes, truth, cost))
    if blend and blend.get("variant") in measured and all(c in blend["naswot"] for c in codes):
        from collm_nas.evaluators.supernet_blend import BlendReference, blend_score

        name, reference = blend["variant"], BlendReference.from_json(blend["reference"])
        scores = [blend_score(records[name]["valid"][c], blend["naswot"][c], reference) for c in codes]
        print(row(f"`{name}` and NASWOT, the evaluator's blend (`blend=naswot`: z-scores on "
                  f"{len(reference.codes)} seeded reference cells, weighted alike)", scores, codes, truth,
                  f"as `{name}` + {blend.get('naswot_s', 0.0):.2f} s a cell + {reference.measure_s:.0f} s once"))
    if proxies and len(proxies.get("scores", {})) >= len(codes):
        s = [proxies["scores"][c] for c in codes]
        if measured:  # the best supernet and the best proxy, each ranking half of the vote
            best = max(measured, key=lambda name: kendall_tau(measured[name], valid))
            both = -(ranks(measured[best], descending=True) + ranks([x["naswot"] for x in s], descending=True))
            print(row(f"`{best}` and NASWOT, mean rank of the two", list(both), codes, truth, "both"))
        for proxy in PROXIES:
            print(row(f"zero-cost `{proxy}` (untrained network, one batch of 64)", [x[proxy] for x in s], codes,
                      truth, f"{proxies['s_per_arch']:.2f} s a cell (all three)"))
        vote = -sum(ranks([x[p] for x in s], descending=True) for p in PROXIES) / len(PROXIES)
        print(row("zero-cost vote (mean rank of the three)", list(vote), codes, truth, "as above"))
        print(row("parameters", [x["params"] for x in s], codes, truth, "free"))
    print()
    paired_se = f" ({kendall_tau_null_se(len(paired)):.3f} for {len(paired)})" if len(paired) > 1 else ""
    print(f"Independent rankings of {len(codes)} cells give a tau with a standard deviation of "
          f"{kendall_tau_null_se(len(codes)):.3f}{paired_se}.")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    codes, truth = read_truth(args.ground_truth)
    out_dir = args.out_dir or load_settings().runs_dir / "fmnist-supernet-tau"
    out_dir.mkdir(parents=True, exist_ok=True)
    records: dict[str, dict] = {}
    proxies = None
    if not args.table_only:
        data = load_dataset("fashion-mnist", data_dir=args.data_dir, image_size=16)
        if not args.no_proxies:
            proxies = measure_proxies(codes, subset_train(data, COMMON["train_size"]), out_dir)
        for name in args.variants:
            records[name] = measure_variant(name, codes, data, out_dir)
        if args.blend_variant in records:
            measure_blend(args.blend_variant, codes, out_dir, args.data_dir)
    for name in VARIANTS:
        path = out_dir / f"{name}.json"
        if name not in records and path.is_file():
            records[name] = json.loads(path.read_text(encoding="utf-8"))
    if proxies is None and (out_dir / "proxies.json").is_file():
        proxies = json.loads((out_dir / "proxies.json").read_text(encoding="utf-8"))
    blend_file = out_dir / f"blend-{args.blend_variant}.json"
    blend = ({**json.loads(blend_file.read_text(encoding="utf-8")), "variant": args.blend_variant}
             if blend_file.is_file() else None)
    print_table(codes, truth, records, proxies, blend)


if __name__ == "__main__":
    main()
