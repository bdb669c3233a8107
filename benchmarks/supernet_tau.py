"""How well the weight-sharing supernet ranks architectures: Kendall tau against stand-alone training.

Trains one NAS-Bench-201 supernet (SPOS: one uniformly sampled path per
step) on ``--dataset`` (digits by default), then for ``--archs`` seeded random
legal architectures measures

* the validation accuracy with weights inherited from the supernet and
  BatchNorm recalibrated on a few training batches (the supernet evaluator), and
* the validation accuracy of the same network trained stand-alone from
  scratch by the trainer (the train evaluator: same data, network size,
  batch size, learning rate and weight decay; ``--epochs`` epochs, seeded),

and prints Kendall's tau-b between the two, and of each against the
NAS-Bench-201 table's ``cifar10_valid`` (CIFAR-10 accuracy of the full-size
network, for context), with the parameter count as a reference ranker and
the time each stage took. Prints a Markdown table.

    python benchmarks/supernet_tau.py                          # 40 architectures, C=8 N=1, 30 supernet epochs
    python benchmarks/supernet_tau.py --archs 60 --supernet-epochs 60 --epochs 12 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time

from collm_nas.evaluators.datasets import load_dataset
from collm_nas.evaluators.nb201_table import load_table
from collm_nas.evaluators.ranking import kendall_tau, kendall_tau_null_se
from collm_nas.evaluators.supernet import (
    SupernetConfig,
    calibration_batches,
    evaluate_inherited,
    load_or_train_supernet,
    sample_path,
)
from collm_nas.evaluators.trainer import TrainConfig, train_architecture
from collm_nas.core.settings import load_settings


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--archs", type=int, default=40, help="architectures (default 40)")
    p.add_argument("--seed", type=int, default=0, help="seed of the architecture sample (default 0)")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--channels", type=int, default=8, help="C of supernet and stand-alone networks (default 8)")
    p.add_argument("--cells", type=int, default=1, help="N (default 1)")
    p.add_argument("--supernet-epochs", type=int, default=SupernetConfig().epochs)
    p.add_argument("--calib-batches", type=int, default=SupernetConfig().calib_batches)
    p.add_argument("--epochs", type=int, default=TrainConfig().epochs, help="stand-alone training epochs")
    p.add_argument("--seeds", type=int, default=2,
                   help="stand-alone trainings per architecture, seeds 0..N-1 (default 2): the reference is their "
                        "mean accuracy, and seed 0 against seed 1 measures how well training ranks itself")
    p.add_argument("--dump", help="write every architecture's figures to this JSON file")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cache-dir", help="supernet cache folder (default: a fresh temporary folder: trained here)")
    p.add_argument("--table", help="nb201.csv.gz (default: $COLLM_NAS_NB201_TABLE or ../shared/data)")
    p.add_argument("--data-dir")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    table = load_table(load_settings().table_path(args.table))
    data = load_dataset(args.dataset, data_dir=args.data_dir)
    rng = random.Random(args.seed)
    codes: dict[str, None] = {}
    while len(codes) < args.archs:
        codes[sample_path(rng)] = None

    snet_config = SupernetConfig(epochs=args.supernet_epochs, channels=args.channels, cells=args.cells,
                                 calib_batches=args.calib_batches, threads=args.threads, device="cpu",
                                 latency_repeats=0)
    train_configs = [TrainConfig(epochs=args.epochs, channels=args.channels, cells=args.cells,
                                 batch_size=snet_config.batch_size, lr=snet_config.lr,
                                 weight_decay=snet_config.weight_decay, threads=args.threads, device="cpu",
                                 latency_repeats=1, seed=seed) for seed in range(max(1, args.seeds))]
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        supernet, info = load_or_train_supernet(args.dataset, data, snet_config, cache_dir=args.cache_dir or tmp)
        supernet_s = time.perf_counter() - started
    print(f"supernet: {'trained' if info.trained else 'loaded'} in {supernet_s:.1f} s "
          f"(final training loss {info.meta.get('final_train_loss', float('nan')):.3f}, "
          f"accuracy of sampled paths {info.meta.get('final_train_acc', float('nan')):.1f}%)", flush=True)

    calibration = calibration_batches(data, snet_config)
    inherited, runs, inherit_s, train_s = [], [], [], []
    for i, code in enumerate(codes, 1):
        t = time.perf_counter()
        inherited.append(evaluate_inherited(supernet, code, data, snet_config, calibration=calibration)["valid_acc"])
        inherit_s.append(time.perf_counter() - t)
        accs = []
        for config in train_configs:
            t = time.perf_counter()
            accs.append(train_architecture("nb201", code, data, config).metrics["valid_acc"])
            train_s.append(time.perf_counter() - t)
        runs.append(accs)
        if i % 10 == 0:
            print(f"  {i}/{len(codes)} architectures", flush=True)
    standalone = [statistics.mean(accs) for accs in runs]
    cifar10 = [table.value(c, "cifar10_valid") for c in codes]
    params = [table.value(c, "params_mb_cifar10") for c in codes]
    if args.dump:
        with open(args.dump, "w", encoding="utf-8") as fh:
            json.dump({"codes": list(codes), "inherited": inherited, "standalone_runs": runs, "cifar10_valid": cifar10,
                       "params_mb": params, "args": vars(args)}, fh, indent=1)

    print()
    print(f"{len(codes)} seeded random legal NAS-Bench-201 architectures (seed {args.seed}) on {data.summary()}; "
          f"NB201 network C={args.channels}, N={args.cells}; supernet {args.supernet_epochs} epochs (uniform "
          f"single-path sampling), BN recalibrated on {snet_config.calib_batches} x {snet_config.calib_batch_size} "
          f"training images; stand-alone {args.epochs} epochs x {len(train_configs)} seed(s) (reference: their mean "
          f"accuracy); batch {snet_config.batch_size}, lr "
          f"{snet_config.lr:g}; {args.threads} thread(s), load average {os.getloadavg()[0]:.1f}")
    print()
    print("| ranking | tau vs stand-alone valid acc (digits) | tau vs NB201 cifar10_valid |")
    print("|---|---|---|")
    print(f"| supernet, inherited weights (valid acc) | {kendall_tau(inherited, standalone):.3f} | "
          f"{kendall_tau(inherited, cifar10):.3f} |")
    print(f"| stand-alone training (valid acc, mean of seeds) | 1 | {kendall_tau(standalone, cifar10):.3f} |")
    if len(train_configs) > 1:
        first, second = [r[0] for r in runs], [r[1] for r in runs]
        print(f"| stand-alone training, seed 0 vs seed 1 (how well training ranks itself) | "
              f"{kendall_tau(first, second):.3f} | {kendall_tau(first, cifar10):.3f} (seed 0) |")
        print(f"| supernet vs stand-alone seed 0 only | {kendall_tau(inherited, first):.3f} | – |")
    print(f"| parameters (reference) | {kendall_tau(params, standalone):.3f} | {kendall_tau(params, cifar10):.3f} |")
    print()
    print(f"With {len(codes)} architectures a tau of independent rankings has a standard deviation of "
          f"{kendall_tau_null_se(len(codes)):.3f}.")
    print()
    print("| stage | time |")
    print("|---|---|")
    print(f"| supernet training (once) | {supernet_s:.1f} s |")
    print(f"| inherited-weight evaluation | {statistics.mean(inherit_s):.2f} s/arch |")
    print(f"| stand-alone training | {statistics.mean(train_s):.2f} s/arch and seed |")
    print()
    print(f"accuracy ranges: inherited {min(inherited):.2f}-{max(inherited):.2f}%, "
          f"stand-alone {min(standalone):.2f}-{max(standalone):.2f}% (validation split of {len(data.valid_y)} images)")


if __name__ == "__main__":
    main()
