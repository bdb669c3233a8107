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
  table column (never the target's own);
* ``features+naswot``: as ``features``, warm-started from a zero-cost proxy
  instead: NASWOT of every network of the space, untrained, C=8, N=1, on one
  minibatch of 32 digits images (no table value of any dataset): what
  ``--prior proxy:naswot`` gives a search, from the same per-machine cache
  (``COLLM_NAS_CACHE_DIR``; computed when missing, about 0.04 s a network on
  one core, 4,929 networks).

``--acquisition ts`` is Thompson sampling, measured here only (the strategy
has no such option): one joint draw from the GP posterior over the
``--ts-pool`` unseen codes with the best expected improvement, and the code
whose draw is highest. ``--networks`` scores as ``--same-networks skip``
searches: a code of a network already evaluated is never picked, and the
search found the best when it evaluated any code of the best's network.

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
from collm_nas.core import load_settings
from collm_nas.evaluators.nb201_table import DATASETS, load_table
from collm_nas.evaluators.proxy_prior import proxy_prior
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
    "features+naswot": {"use_hook": True, "fit_steps": 120},
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


def thompson_pick(ranker: LearnedRanker, candidates: list[str], pool: int, generator: torch.Generator) -> str:
    """One joint posterior draw over the ``pool`` candidates with the best expected improvement; its argmax."""
    ranked = ranker.rank(candidates)[:pool]
    p = ranker._params
    H, F = ranker._onehot(ranked), ranker._extra(ranked)
    cross = ranker._cross(p, H, F)
    mean = cross @ ranker._alpha
    V = cross @ ranker._Linv.double().T
    cov = ranker._kernel(p, H, F, H, F) - V @ V.T
    eye = torch.eye(len(ranked), dtype=cov.dtype)
    for jitter in (1e-6, 1e-4, 1e-2):
        try:
            L = torch.linalg.cholesky((cov + cov.T) / 2 + jitter * eye)
            break
        except RuntimeError:
            continue
    else:  # no jitter made the posterior factorisable: fall back to the expected improvement's order
        return ranked[0]
    draw = mean + L @ torch.randn(len(ranked), generator=generator, dtype=cov.dtype)
    return ranked[int(torch.argmax(draw))]


def run_one(space, legal: list[str], table, dataset: str, seed: int, args, variant: str, prior) -> tuple:
    spec = DATASETS[dataset]
    best_code, _ = table.best(spec.searched)
    key = space.network_key if args.networks else (lambda code: code)
    # With a prior the strategy ranks from the first round on; without, it starts with random trials.
    codes = initial_codes(space, set(legal), seed, 0 if prior else args.init)
    values = [table.value(c, spec.searched) for c in codes]
    seen = {key(c) for c in codes}
    generator = torch.Generator().manual_seed(seed)
    started = time.perf_counter()
    while len(codes) < args.budget and key(best_code) not in seen:
        ranker = LearnedRanker(space, mode="max", acquisition="ei" if args.acquisition == "ts" else args.acquisition,
                               prior=prior, seed=seed, **VARIANTS[variant])
        ranker.fit(codes, values)
        candidates = [c for c in legal if key(c) not in seen]
        if args.acquisition == "ts" and ranker.trials:
            pick = thompson_pick(ranker, candidates, args.ts_pool, generator)
        else:
            pick = ranker.rank(candidates)[0]
        codes.append(pick)
        seen.add(key(pick))
        values.append(table.value(pick, spec.searched))
    keys = [key(c) for c in codes]
    found_at = keys.index(key(best_code)) + 1 if key(best_code) in seen else None
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
    ap.add_argument("--acquisition", default="ei", choices=["ei", "ucb", "mean", "ts"])
    ap.add_argument("--ts-pool", type=int, default=200, help="ts: candidates in the joint draw (default 200)")
    ap.add_argument("--networks", action="store_true",
                    help="never pick a code of a network already evaluated; score the best's whole network")
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
            elif variant == "features+naswot":
                codes, values = proxy_prior(space, legal, "naswot", load_settings().cache_path(), say=print)
                prior = [("proxy:naswot", codes, values)]
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
          f"unseen legal code{' of a network not evaluated yet' if args.networks else ''}, seeds {seeds.start}-{seeds.stop - 1}; a search stops when it finds the best")
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
