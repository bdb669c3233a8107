"""The learned ranker's cold start on NAS-Bench-201, replayed without the LangGraph loop.

Each search does what ``--strategy lmsearcher --llm none`` does at batch size
1: ``--init`` random legal codes (drawn as the strategy draws them, from the
seed, round and role; none with a prior), then every round a new ranker is fitted on all trials
so far and the unseen legal code with the best acquisition value is looked
up in the table. A search stops when it has found the space's best
architecture (by the searched metric) or spent the budget, so a cell is far
cheaper than ``benchmarks/strategies.py``, whose searches always spend the
whole budget; with the same seed both pick the same codes.

Variants (repeat ``--variant``) say what the ranker sees and how it is fitted:

* ``features`` (the default ranker): the code's decisions, and the space's
  own features of the architecture (NAS-Bench-201: the live-edge share of
  each operation), 120 Adam steps per fit;
* ``codes``: the decisions only, 40 steps per fit (the ranker before the
  features, as it ran until commit ffd43eb);
* ``features+prior``: as ``features``, warm-started from another dataset's
  table column (never the target's own).

Per (dataset, variant): the share of seeds that found the space's best, the
median evaluations they needed (and over all seeds, a miss counting as more
than the budget), and the mean seconds per search (to the find or the end).

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
from collm_nas.spaces import SPACES
from collm_nas.tools.validity import ValidityChecker

DEFAULT_TABLE = "/work/shared/data/nb201.csv.gz"
# prior column per target dataset: always another dataset's column
PRIOR_COLUMN = {"cifar10": "cifar100_test", "cifar100": "cifar10_valid", "imagenet16": "cifar100_test"}
VARIANTS = {
    "features": {"use_hook": True, "fit_steps": 120},
    "codes": {"use_hook": False, "fit_steps": 40},
    "features+prior": {"use_hook": True, "fit_steps": 120},
    "codes+prior": {"use_hook": False, "fit_steps": 40},
    "codes120+prior": {"use_hook": False, "fit_steps": 120},
}
# As agents/baselines.py's sample_new: draws per wanted code before giving up.
SAMPLE_TRIES = 200


def initial_codes(space, legal: set[str], seed: int, n: int) -> list[str]:
    """The strategy's random initial trials: one per round, from the (seed, round, 'generator') stream."""
    codes: list[str] = []
    for round_no in range(1, n + 1):
        rng = random.Random(f"{seed}/{round_no}/generator")
        for _ in range(SAMPLE_TRIES):
            code = space.sample(rng)
            if code in legal and code not in codes:
                codes.append(code)
                break
    return codes


def run_one(space, legal: list[str], table, dataset: str, seed: int, args, variant: str, prior) -> tuple:
    spec = DATASETS[dataset]
    best_code, _ = table.best(spec.searched)
    # With a prior the strategy ranks from the first round on; without, it starts with random trials.
    codes = initial_codes(space, set(legal), seed, 0 if prior else args.init)
    values = [table.value(c, spec.searched) for c in codes]
    seen = set(codes)
    started = time.perf_counter()
    while len(codes) < args.budget and best_code not in seen:
        ranker = LearnedRanker(space, mode="max", acquisition=args.acquisition, prior=prior, seed=seed,
                               **VARIANTS[variant])
        ranker.fit(codes, values)
        pick = ranker.rank([c for c in legal if c not in seen])[0]
        codes.append(pick)
        seen.add(pick)
        values.append(table.value(pick, spec.searched))
    found_at = codes.index(best_code) + 1 if best_code in seen else None
    return found_at, time.perf_counter() - started


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--table", default=DEFAULT_TABLE)
    ap.add_argument("--datasets", nargs="+", default=list(PRIOR_COLUMN), choices=list(PRIOR_COLUMN))
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--budget", type=int, default=100)
    ap.add_argument("--init", type=int, default=10, help="random initial trials without a prior (the strategy's default)")
    ap.add_argument("--variant", action="append", choices=list(VARIANTS),
                    help="repeatable; default: features and codes")
    ap.add_argument("--acquisition", default="ei", choices=["ei", "ucb", "mean"])
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    variants = args.variant or ["features", "codes"]

    space = SPACES.resolve("nb201")
    checker = ValidityChecker(space)
    legal = [c for c in space.enumerate() if checker.is_valid(c)]
    table = load_table(args.table)
    seeds = range(args.first_seed, args.first_seed + args.seeds)

    rows = []
    for dataset in args.datasets:
        for variant in variants:
            prior = None
            if variant.endswith("+prior"):
                column = PRIOR_COLUMN[dataset]
                assert column != DATASETS[dataset].searched
                prior = [(column, legal, [table.value(c, column) for c in legal])]
            found, seconds = [], []
            for seed in seeds:
                at, wall = run_one(space, legal, table, dataset, seed, args, variant, prior)
                found.append(at)
                seconds.append(wall)
            hits = [a for a in found if a is not None]
            row = {"dataset": dataset, "variant": variant, "found": found, "hits": len(hits),
                   "median_hits": statistics.median(hits) if hits else None,
                   "median_all": statistics.median([a if a is not None else args.budget + 1 for a in found]),
                   "seconds": statistics.fmean(seconds)}
            rows.append(row)
            print(row, flush=True)

    print()
    print(f"budget {args.budget}, {args.init} random initial trials, acquisition {args.acquisition} over every "
          f"unseen legal code, seeds {seeds.start}-{seeds.stop - 1}; a search stops when it finds the best")
    print()
    print("| dataset (searched) | ranker | found best | median evals (hits) | median evals (all seeds) | s/search |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        med = "–" if r["median_hits"] is None else f"{r['median_hits']:g}"
        med_all = f"{r['median_all']:g}" if r["median_all"] <= args.budget else "not reached"
        print(f"| {r['dataset']} ({DATASETS[r['dataset']].searched}) | {r['variant']} | {r['hits']}/{len(r['found'])} "
              f"({100 * r['hits'] / len(r['found']):.0f}%) | {med} | {med_all} | {r['seconds']:.1f} |")


if __name__ == "__main__":
    main()
