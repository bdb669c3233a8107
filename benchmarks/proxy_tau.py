"""Zero-cost proxies against the NAS-Bench-201 table: Kendall tau on seeded random architectures.

Draws ``--archs`` distinct legal architectures uniformly (seeded), computes
synflow, NASWOT and grad-norm of each one's untrained stand-alone network on
one minibatch of real images of ``--dataset`` (digits by default: the scores
are measured on digits, the accuracies are the table's CIFAR/ImageNet16
ones), and prints Kendall's tau-b of each proxy against the table's
``cifar10_valid``, ``cifar100_test`` and ``imagenet16_test``, with the
seconds per architecture. Two reference rows: the number of parameters (the
table's ``params_mb_cifar10``) and ``vote`` (the mean rank of the three
proxies). Prints a Markdown table.

    python benchmarks/proxy_tau.py                                   # 200 architectures, C=16 N=5, 1 thread
    python benchmarks/proxy_tau.py --archs 1000 --channels 16 --cells 5 --threads 2
"""

from __future__ import annotations

import argparse
import os
import random
import time

import numpy as np

from collm_nas.evaluators.datasets import load_dataset
from collm_nas.evaluators.nb201_table import load_table
from collm_nas.evaluators.proxies import PROXIES, ProxyConfig, proxy_scores
from collm_nas.evaluators.ranking import kendall_tau, kendall_tau_null_se, ranks
from collm_nas.evaluators.supernet import sample_path
from collm_nas.core.settings import load_settings

COLUMNS = ("cifar10_valid", "cifar100_test", "imagenet16_test")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--archs", type=int, default=200, help="architectures (default 200)")
    p.add_argument("--seed", type=int, default=0, help="seed of the architecture sample (default 0)")
    p.add_argument("--dataset", default="digits", help="images the proxies see (default digits)")
    p.add_argument("--channels", type=int, default=16, help="C of the scored network (default 16, the benchmark's)")
    p.add_argument("--cells", type=int, default=5, help="N of the scored network (default 5, the benchmark's)")
    p.add_argument("--batch-size", type=int, default=64, help="minibatch of NASWOT and grad-norm (default 64)")
    p.add_argument("--proxy-seed", type=int, default=0, help="seed of the initial weights and the minibatch")
    p.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    p.add_argument("--table", help="nb201.csv.gz (default: $COLLM_NAS_NB201_TABLE or ../shared/data)")
    p.add_argument("--data-dir", help="folder of CIFAR / torchvision data when --dataset needs one")
    return p.parse_args(argv)


def sample_codes(count: int, seed: int) -> list[str]:
    """``count`` distinct legal NCodes drawn uniformly with a seeded generator."""
    rng = random.Random(seed)
    codes: dict[str, None] = {}
    while len(codes) < count:
        codes[sample_path(rng)] = None
    return list(codes)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    table = load_table(load_settings().table_path(args.table))
    data = load_dataset(args.dataset, data_dir=args.data_dir)
    config = ProxyConfig(channels=args.channels, cells=args.cells, batch_size=args.batch_size,
                         seed=args.proxy_seed, threads=args.threads, device="cpu")
    codes = sample_codes(args.archs, args.seed)
    scores: dict[str, list[float]] = {p: [] for p in PROXIES}
    started = time.perf_counter()
    cpu_started = time.process_time()
    for i, code in enumerate(codes, 1):
        for name, value in proxy_scores(code, data, config).items():
            scores[name].append(value)
        if i % 50 == 0:
            print(f"  {i}/{len(codes)} architectures, {time.perf_counter() - started:.0f} s", flush=True)
    wall = (time.perf_counter() - started) / len(codes)
    cpu = (time.process_time() - cpu_started) / len(codes)
    truth = {col: [table.value(c, col) for c in codes] for col in COLUMNS}
    rows = {name: values for name, values in scores.items()}
    safe = {p: [v if np.isfinite(v) else -1e300 for v in scores[p]] for p in PROXIES}
    rows["vote (mean rank of the three)"] = list(-sum(ranks(safe[p], descending=True) for p in PROXIES))
    rows["params (table, reference)"] = [table.value(c, "params_mb_cifar10") for c in codes]

    print()
    print(f"{len(codes)} seeded random legal NAS-Bench-201 architectures (seed {args.seed}); proxies on "
          f"{data.summary()}; NB201 network C={args.channels}, N={args.cells} at init (seed {args.proxy_seed}), "
          f"minibatch {args.batch_size}; {args.threads} thread(s), os.cpu_count()={os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print()
    print("| proxy | tau cifar10_valid | tau cifar100_test | tau imagenet16_test | s/arch (wall) | s/arch (CPU) |")
    print("|---|---|---|---|---|---|")
    for name, values in rows.items():
        values = [v if np.isfinite(v) else -1e300 for v in values]  # a non-finite score ranks last
        taus = " | ".join(f"{kendall_tau(values, truth[col]):.3f}" for col in COLUMNS)
        timing = f"{wall:.2f} | {cpu:.2f}" if name in PROXIES else "– | –"
        print(f"| {name} | {taus} | {timing} |")
    print()
    print("s/arch: one architecture's three proxies together (one minibatch forward and backward for naswot "
          "and grad_norm, one single-image pass for synflow), network construction included")
    finite = {p: int(np.isfinite(scores[p]).sum()) for p in PROXIES}
    print()
    print(f"With {len(codes)} architectures a tau of independent rankings has a standard deviation of "
          f"{kendall_tau_null_se(len(codes)):.3f}.")
    print(f"finite scores: {finite}")


if __name__ == "__main__":
    main()
