"""Multi-objective search on NAS-Bench-201: how much of the true Pareto front each strategy finds.

Every (pair, strategy, seed) is one real ``Workspace.search`` (LangGraph graph,
SQLite checkpointer, trial store, table evaluator) with two objectives, or
three for the triple ``c10-pixel3-params`` (accuracy, latency and parameters).
The true front is computed from the whole table; the hypervolume reference
point is the table's median of every objective (a point has to beat all of
them to count). Per pair (or triple) and strategy it prints:

* the median (and min-max) over seeds of the hypervolume ratio of the
  evaluated trials to the true front's,
* the share of the true front's architectures the search evaluated (mean),
* the median number of evaluations to reach 0.9 of the true hypervolume
  (over the seeds that reached it, with how many did).

    python benchmarks/pareto.py --seeds 20 --budget 100 --strategies random rea local lmsearcher
    python benchmarks/pareto.py --with-peers   # also Optuna's samplers (optuna-tpe, -gp, -nsga2, -random)
    python benchmarks/pareto.py --pairs c10-pixel3-params --seeds 10 --with-peers   # three objectives
    python benchmarks/pareto.py --strategies lmsearcher --with-prior proxy:naswot   # also warm-started
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from collm_nas import Workspace
from collm_nas.agents import peer_names
from collm_nas.core import Objectives, Trial
from collm_nas.core.pareto import hypervolume, non_dominated
from collm_nas.core.settings import Settings
from collm_nas.evaluators.nb201_table import NB201TableEvaluator

# (dataset, accuracy objective, cost objectives...)
PAIRS = {
    "c10-pixel3": ("cifar10", "cifar10_valid", "lat_ms_pixel3"),
    "in16-eyeriss": ("imagenet16", "imagenet16_test", "lat_ms_eyeriss"),
    "c100-params": ("cifar100", "cifar100_test", "params_mb"),
    "c10-pixel3-params": ("cifar10", "cifar10_valid", "lat_ms_pixel3", "params_mb"),
}
TWO_OBJECTIVES = ("c10-pixel3", "in16-eyeriss", "c100-params")  # the default ones
MULTI_OBJECTIVE = ("random", "rea", "local", "lmsearcher")
PRIOR_STRATEGIES = ("lmsearcher",)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--strategies", nargs="+", default=list(MULTI_OBJECTIVE))
    p.add_argument("--pairs", nargs="+", default=list(TWO_OBJECTIVES), choices=list(PAIRS),
                   help="pairs of objectives, or the triple c10-pixel3-params (default: the three pairs)")
    p.add_argument("--seeds", type=int, default=20)
    p.add_argument("--budget", type=int, default=100)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--llm", default="none", help="for LLM strategies: none (default), local, endpoint")
    p.add_argument("--table", default=None, help="nb201.csv.gz (default: settings)")
    p.add_argument("--out", type=Path, default=None, help="write every search's figures as JSON")
    p.add_argument("--plot", type=Path, default=None, help="PNG: the true front and seed 0's fronts, first pair")
    p.add_argument("--with-prior", metavar="PRIOR", default=None,
                   help="also run the strategies that take a prior (lmsearcher) warm-started from PRIOR, e.g. "
                        "proxy:naswot (no table value of any dataset); a row of its own, named STRATEGY+PRIOR")
    p.add_argument("--same-networks", choices=["skip", "evaluate"], default="skip",
                   help="codes of one network: skip (each network evaluated once, the default) or evaluate")
    p.add_argument("--with-peers", action="store_true",
                   help=f"also run the other libraries' searches ({', '.join(peer_names())}), one row each")
    args = p.parse_args(argv)
    if args.with_peers:
        args.strategies += [s for s in peer_names() if s not in args.strategies]
    if args.with_prior:
        args.strategies += [f"{s}+{args.with_prior}" for s in args.strategies if s in PRIOR_STRATEGIES]
    args.table = Settings().table_path(args.table)
    return args


def true_front(table_path: str, pair: str) -> dict:
    """The whole table's points for a pair (or triple), its front, the reference point and the front's
    hypervolume."""
    dataset, accuracy, *costs = PAIRS[pair]
    evaluator = NB201TableEvaluator(table_path, dataset=dataset)
    evaluator.want_metrics([accuracy, *costs])
    objectives = Objectives.parse([f"{accuracy}:max", *(f"{cost}:min" for cost in costs)])
    trials = [t for t in evaluator.evaluate(list(evaluator.table.rows)) if objectives.point(t) is not None]
    reference = tuple(statistics.median(t.metrics[m] for t in trials) for m in (accuracy, *costs))
    points = [objectives.point(t) for t in trials]
    front = [trials[i].ncode for i in non_dominated(points)]
    return {"objectives": objectives.specs(), "reference": reference, "front": front,
            "hypervolume": hypervolume(points, objectives.signed(reference))}


def run_chunk(task: tuple) -> list[dict]:
    """One worker: its own Workspace (own SQLite file), its share of the searches."""
    runs_dir, table_path, llm, same_networks, fronts, jobs = task
    ws = Workspace(runs_dir, table_path=table_path)
    records = []
    for strategy, pair, seed, budget in jobs:
        truth = fronts[pair]
        objectives = Objectives.parse(truth["objectives"])
        started = time.perf_counter()
        run_id = f"{strategy}-{pair}-s{seed}".replace("+", "-").replace(":", "-")
        name, _, prior = strategy.partition("+")
        ws.search(space="nb201", dataset=PAIRS[pair][0], strategy=name, budget=budget, seed=seed,
                  run_id=run_id, llm=llm, objectives=truth["objectives"], prior=[prior] if prior else [],
                  same_networks=same_networks)
        wall = time.perf_counter() - started
        trials = ws.run(run_id).trials()
        records.append({"strategy": strategy, "pair": pair, "seed": seed, "wall_s": wall,
                        **front_figures(trials, objectives, truth)})
    return records


def front_figures(trials: list[Trial], objectives: Objectives, truth: dict) -> dict:
    """Hypervolume ratio, share of the true front found, evaluations to 0.9 of the true hypervolume."""
    reference = objectives.signed(truth["reference"])
    points = [objectives.point(t) for t in trials]
    to_09 = None
    running: list[tuple[float, ...]] = []
    for n, p in enumerate(points, start=1):
        if p is not None:
            running.append(p)
            if to_09 is None and hypervolume(running, reference) >= 0.9 * truth["hypervolume"]:
                to_09 = n
    ratio = hypervolume(running, reference) / truth["hypervolume"]
    found = len(set(truth["front"]) & {t.ncode for t in trials}) / len(truth["front"])
    return {"hv_ratio": ratio, "front_found": found, "evals_to_0.9": to_09, "evaluations": len(trials)}


def run_all(args: argparse.Namespace, fronts: dict, root: Path) -> list[dict]:
    jobs = [(s, p, seed, args.budget) for p in args.pairs for s in args.strategies for seed in range(args.seeds)]
    workers = max(1, min(args.workers, len(jobs)))
    tasks = [(str(root / f"worker{i}"), args.table, args.llm, args.same_networks, fronts, jobs[i::workers])
             for i in range(workers)]
    if workers == 1:
        return run_chunk(tasks[0])
    with mp.get_context("spawn").Pool(workers) as pool:
        return [r for chunk in pool.map(run_chunk, tasks) for r in chunk]


def markdown(records: list[dict], fronts: dict, pairs: list[str], strategies: list[str]) -> str:
    cells: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in records:
        cells[(r["pair"], r["strategy"])].append(r)
    lines = ["| pair | true front | strategy | HV ratio median (min-max) | true front found | evals to 0.9 HV "
             "(seeds) | s/search |", "|---|---|---|---|---|---|---|"]
    for pair in pairs:
        objectives = " vs ".join(fronts[pair]["objectives"])
        for s in strategies:
            rs = cells[(pair, s)]
            if not rs:
                continue
            ratios = [r["hv_ratio"] for r in rs]
            reached = [r["evals_to_0.9"] for r in rs if r["evals_to_0.9"] is not None]
            to = f"{statistics.median(reached):g} ({len(reached)}/{len(rs)})" if reached else f"– (0/{len(rs)})"
            lines.append(
                f"| {objectives} | {len(fronts[pair]['front'])} | {s} | {statistics.median(ratios):.3f} "
                f"({min(ratios):.3f}-{max(ratios):.3f}) | {statistics.mean(r['front_found'] for r in rs):.0%} | "
                f"{to} | {statistics.mean(r['wall_s'] for r in rs):.1f} |")
    return "\n".join(lines)


def plot(path: Path, table_path: str, pair: str, fronts: dict, root: Path, strategies: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dataset, accuracy, cost = PAIRS[pair]  # a pair (main() plots the first pair asked for)
    evaluator = NB201TableEvaluator(table_path, dataset=dataset)
    evaluator.want_metrics([accuracy, cost])
    truth = {t.ncode: t for t in evaluator.evaluate(fronts[pair]["front"])}
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    xs = sorted((t.metrics[cost], t.metrics[accuracy]) for t in truth.values())
    ax.step([x for x, _ in xs], [y for _, y in xs], where="post", color="black", label="true front")
    objectives = Objectives.parse(fronts[pair]["objectives"])
    for s in strategies:
        for worker in sorted(root.glob("worker*")):
            ws = Workspace(worker)
            run_id = f"{s}-{pair}-s0".replace("+", "-").replace(":", "-")
            if ws.store.get_run(run_id) is None:
                continue
            front = objectives.front(ws.run(run_id).trials())
            pts = sorted((t.metrics[cost], t.metrics[accuracy]) for t in front)
            ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", markersize=3, linewidth=1, label=s)
    ref_acc, ref_cost = fronts[pair]["reference"]
    ax.plot([ref_cost], [ref_acc], marker="x", color="black", markersize=9, linestyle="none",
            label="reference (table medians)")
    best = max(t.metrics[accuracy] for t in truth.values())
    ax.set_xlim(0, ref_cost * 1.05)  # the region the hypervolume counts
    ax.set_ylim(ref_acc - 0.05 * (best - ref_acc), best + 0.05 * (best - ref_acc))
    ax.set_xlabel(cost)
    ax.set_ylabel(accuracy)
    ax.set_title(f"Pareto fronts after 100 evaluations, seed 0 ({pair})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    fronts = {p: true_front(args.table, p) for p in args.pairs}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="collm-nas-pareto-") as tmp:
        records = run_all(args, fronts, Path(tmp))
        pairs = [p for p in args.pairs if len(PAIRS[p]) == 3]
        if args.plot and pairs:
            plot(args.plot, args.table, pairs[0], fronts, Path(tmp), args.strategies)
    print(f"{args.seeds} seeds x {args.budget} evaluations; reference point: the table's median of every "
          f"objective; {time.perf_counter() - started:.0f} s in all\n")
    print(markdown(records, fronts, args.pairs, args.strategies))
    if args.out:
        args.out.write_text(json.dumps({"fronts": fronts, "records": records}, indent=2))
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
