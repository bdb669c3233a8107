"""What rebuilding an Optuna study every round costs: the seconds to rebuild it and to ask it, against trials.

The optuna-* strategies (collm_nas.agents.optuna_samplers) rebuild their study
from the run's trials each round, so that a resumed run proposes exactly what
an uninterrupted one would. Per sampler and history size N (random legal
NAS-Bench-201 architectures with their table values, in a real trial store)
this prints the median over repeats of

* rebuild: a fresh study with the N trials (create_trial + add_trials),
* ask: one proposal from the rebuilt study (TPE / GP fit here, every ask),
* round: both, what one round of batch size 1 adds to a search.

    python benchmarks/optuna_cost.py --sizes 10 50 100 200 --samplers tpe gp nsga2 random
    python benchmarks/optuna_cost.py --objective cifar10_valid:max --objective params_mb:min --constraint flops_m<=150
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

from collm_nas.agents.optuna_samplers import SAMPLERS, ask, make_sampler, quiet_optuna, rebuild, require_optuna
from collm_nas.core import Objective, Objectives, RoundContext
from collm_nas.core.settings import Settings
from collm_nas.evaluators.nb201_table import NB201TableEvaluator
from collm_nas.spaces import parse_constraints
from collm_nas.storage import RunHistory, SQLiteTrialStore
from collm_nas.tools import ValidityChecker


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=list(SAMPLERS))
    p.add_argument("--sizes", nargs="+", type=int, default=[10, 50, 100, 200])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--objective", action="append", default=[], metavar="NAME:max|min",
                   help="two or three for a multi-objective study (default: cifar10_valid alone)")
    p.add_argument("--constraint", action="append", default=[], metavar="EXPR", help="e.g. params_mb<=1.0")
    p.add_argument("--table", default=None, help="nb201.csv.gz (default: settings)")
    args = p.parse_args(argv)
    args.table = Settings().table_path(args.table)
    return args


def context(args: argparse.Namespace, evaluator: NB201TableEvaluator, history: RunHistory, n: int) -> RoundContext:
    checker = ValidityChecker(evaluator.space, parse_constraints(args.constraint), evaluator.resources)
    objectives = Objectives.parse(args.objective) if len(args.objective) > 1 else None
    return RoundContext(space=evaluator.space, history=history, round=n + 1, seed=0, quota=1,
                        is_legal=checker.is_valid, objective=Objective(evaluator.searched_metric), memory={},
                        checker=checker, objectives=objectives)


def history_of(store: SQLiteTrialStore, evaluator: NB201TableEvaluator, checker_legal, n: int, seed: int) -> RunHistory:
    rng = random.Random(seed)
    codes: list[str] = []
    while len(codes) < n:
        code = evaluator.space.sample(rng)
        if code not in codes and checker_legal(code):
            codes.append(code)
    run_id = f"cost-{n}-{seed}"
    store.create_run(run_id, {})
    for i, t in enumerate(evaluator.evaluate(codes)):
        store.add_trial(run_id, t.recorded(round=i + 1, value=t.metrics.get(evaluator.searched_metric)))
    return RunHistory(store, run_id, Objective(evaluator.searched_metric))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    optuna = require_optuna()
    evaluator = NB201TableEvaluator(args.table, dataset="cifar10")
    if len(args.objective) > 1:
        evaluator.want_metrics(Objectives.parse(args.objective).metrics)
    legal = ValidityChecker(evaluator.space, parse_constraints(args.constraint), evaluator.resources).is_valid
    print(f"Optuna {optuna.__version__}; objectives {', '.join(args.objective) or evaluator.searched_metric}; "
          f"constraints {', '.join(args.constraint) or 'none'}; median of {args.repeats}\n")
    print("| sampler | trials | rebuild s | ask s | round s |\n|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="collm-nas-optuna-cost-") as tmp:
        store = SQLiteTrialStore(Path(tmp) / "cost.db")
        histories = {(n, r): history_of(store, evaluator, legal, n, r) for n in args.sizes for r in range(args.repeats)}
        for kind in args.samplers:
            for n in args.sizes:
                rebuilds, asks = [], []
                for r in range(args.repeats):
                    ctx = context(args, evaluator, histories[(n, r)], n)
                    with quiet_optuna(optuna):
                        started = time.perf_counter()
                        study = rebuild(optuna, ctx, make_sampler(optuna, kind, r))
                        built = time.perf_counter()
                        ask(optuna, study, ctx, 1)
                        asked = time.perf_counter()
                    rebuilds.append(built - started)
                    asks.append(asked - built)
                rb, ak = statistics.median(rebuilds), statistics.median(asks)
                print(f"| {kind} | {n} | {rb:.4f} | {ak:.4f} | {rb + ak:.4f} |")
        store.close()


if __name__ == "__main__":
    main()
