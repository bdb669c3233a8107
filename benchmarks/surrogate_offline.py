"""Offline check of the learned ranker on NAS-Bench-201, without the LangGraph loop.

For each dataset and seed: a few random legal trials, then every round the
ranker is refitted on all trials so far and the top-scored unseen legal code
is evaluated (looked up in the table), until the budget is spent. Candidates
come either from (a) every unseen legal code ("full") or (b) a pool of 10-200
codes drawn by pruning-based subspace sampling ("pool": each decision drops
each option with probability p, keeping at least one, and codes are sampled
inside the remaining subspace). A warm-started variant takes its prior from
another dataset's full table (never the target's own column).

Per (dataset, variant) it reports the share of seeds that found the space's
best code by the searched metric, the median evaluations they needed, and the
mean reported test accuracy of the best code found (best by searched metric).

    python benchmarks/surrogate_offline.py --seeds 20 --budget 100
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch

from collm_nas.agents.surrogate import LearnedRanker
from collm_nas.evaluators.nb201_table import DATASETS, load_table
from collm_nas.spaces import get_space
from collm_nas.tools.validity import ValidityChecker

DEFAULT_TABLE = "/work/shared/data/nb201.csv.gz"
# prior column per target dataset: always another dataset's column
PRIOR_COLUMN = {"cifar10": "cifar100_test", "cifar100": "cifar10_valid", "imagenet16": "cifar100_test"}


def pruned_pool(space, legal_set: set[str], seen: set[str], rng: random.Random, size: int, p: float) -> list[str]:
    """Up to ``size`` unseen legal codes sampled inside a randomly pruned subspace."""
    for _ in range(20):
        kept = []
        for d in space.decisions:
            opts = [i for i in range(len(d.options)) if rng.random() >= p]
            kept.append(opts or [rng.randrange(len(d.options))])
        pool: set[str] = set()
        for _ in range(size * 8):
            code = space.canonical([rng.choice(o) for o in kept])
            if code in legal_set and code not in seen:
                pool.add(code)
                if len(pool) >= size:
                    break
        if pool:
            return sorted(pool)
    return []


def run_one(space, legal, legal_set, table, dataset, seed, budget, n_init, candidates, prior, args):
    spec = DATASETS[dataset]
    rng = random.Random(seed)
    best_code, _ = table.best(spec.searched)
    codes = rng.sample(legal, n_init)
    seen = set(codes)
    values = [table.value(c, spec.searched) for c in codes]
    ranker = LearnedRanker(space, mode="max", acquisition=args.acquisition, prior=prior, seed=seed,
                           beta=args.beta, **getattr(args, "ranker_kwargs", {}))
    fit_s = []
    while len(codes) < budget and best_code not in seen:
        t0 = time.perf_counter()
        ranker.fit(codes, values)
        if candidates == "full":
            pool = [c for c in legal if c not in seen]
        else:
            pool = pruned_pool(space, legal_set, seen, rng, rng.randint(10, 200), args.prune)
        pick = ranker.rank(pool)[0]
        fit_s.append(time.perf_counter() - t0)
        codes.append(pick)
        seen.add(pick)
        values.append(table.value(pick, spec.searched))
    found_at = codes.index(best_code) + 1 if best_code in seen else None
    # with the budget left after finding the optimum, the best found stays the optimum
    top = max(codes, key=lambda c: table.value(c, spec.searched))
    return found_at, table.value(top, spec.reported), fit_s


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--table", default=DEFAULT_TABLE)
    ap.add_argument("--datasets", nargs="+", default=list(PRIOR_COLUMN))
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--budget", type=int, default=100)
    ap.add_argument("--init", type=int, default=10)
    ap.add_argument("--candidates", nargs="+", default=["full", "pool"], choices=["full", "pool"])
    ap.add_argument("--warm", nargs="+", default=["cold", "prior"], choices=["cold", "prior"])
    ap.add_argument("--acquisition", default="ei", choices=["ei", "ucb", "mean"])
    ap.add_argument("--beta", type=float, default=2.0)
    ap.add_argument("--prune", type=float, default=0.5, help="probability of pruning each option (pool variant)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    space = get_space("nb201")
    checker = ValidityChecker(space)
    legal = [c for c in space.enumerate() if checker.is_valid(c)]
    legal_set = set(legal)
    table = load_table(args.table)

    rows = []
    for dataset in args.datasets:
        for warm in args.warm:
            prior = None
            if warm == "prior":
                col = PRIOR_COLUMN[dataset]
                assert col != DATASETS[dataset].searched
                prior = [(col, legal, [table.value(c, col) for c in legal])]
            for cand in args.candidates:
                t0 = time.perf_counter()
                found, reported, per_round = [], [], []
                for seed in range(args.seeds):
                    at, rep, fs = run_one(space, legal, legal_set, table, dataset, seed, args.budget, args.init,
                                          cand, prior, args)
                    found.append(at)
                    reported.append(rep)
                    per_round += fs
                hits = [a for a in found if a is not None]
                row = {
                    "dataset": dataset,
                    "searched": DATASETS[dataset].searched,
                    "warm": "cold" if prior is None else f"prior={PRIOR_COLUMN[dataset]}",
                    "candidates": cand,
                    "found": f"{len(hits)}/{len(found)}",
                    "share": len(hits) / len(found),
                    "median_evals": statistics.median(hits) if hits else None,
                    "median_all": statistics.median([a if a is not None else float("inf") for a in found]),
                    "reported": statistics.mean(reported),
                    "round_ms": 1000 * statistics.mean(per_round) if per_round else 0.0,
                    "wall_s": time.perf_counter() - t0,
                }
                rows.append(row)
                print(row, flush=True)

    print()
    print(f"budget {args.budget}, {args.init} random initial trials, acquisition {args.acquisition}, "
          f"{args.seeds} seeds; pool = pruning-based subspace sampling (p={args.prune}, 10-200 codes)")
    print()
    print("| dataset (searched) | warm start | candidates | found best | median evals (hits) | "
          "median evals (all seeds) | mean reported acc. | ms/round |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        med = "-" if r["median_evals"] is None else f"{r['median_evals']:.0f}"
        med_all = "not reached" if r["median_all"] == float("inf") else f"{r['median_all']:.0f}"
        print(f"| {r['dataset']} ({r['searched']}) | {r['warm']} | {r['candidates']} | {r['found']} "
              f"({100 * r['share']:.0f}%) | {med} | {med_all} | {r['reported']:.2f} | {r['round_ms']:.0f} |")


if __name__ == "__main__":
    main()
