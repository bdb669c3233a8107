"""Multi-objective search on NAS-Bench-201: how much of the true Pareto front each strategy finds.

Every (pair, strategy, seed) is one real ``Workspace.search`` (LangGraph graph,
SQLite checkpointer, trial store, table evaluator) with two objectives, or
three for the triple ``c10-pixel3-params`` (accuracy, latency and parameters).
The true front is computed from the whole table's legal cells; the
hypervolume reference point is the median of every objective (a point has to
beat all of them to count).

Scoring (``--score``) takes accuracy by network by default: NAS-Bench-201
writes one network with several codes (isomorphic cells, dead edges), and
the table holds a separate training of each code, so the codes of one
network carry different accuracies by training noise alone. A code's point
is its network's mean accuracy over those codes, and its own costs (the
table's latency and size of that code, dead edges included: what the search
itself is shown). The true front is the front of every legal code's point,
and a search is scored by the points of the codes it evaluated. Scoring by
code (``--score codes``) takes every code's own accuracy: there a search that
evaluates each network once (``--same-networks skip``, the default) cannot
reach the front that a twin's lucky training sets, and one that evaluates
every code is paid for its repeats. Per pair (or triple) and strategy it
prints:

* the median (and min-max) over seeds of the hypervolume ratio of the
  evaluated trials to the true front's,
* the share of the true front's networks the search evaluated (mean; a
  front holds every isomorphic code of a network, which tie), and the same
  share of the front's networks that beat the reference in every objective,
  the only ones the hypervolume counts (a front network cheaper than the
  median cost but less accurate than the median accuracy adds nothing),
* the median number of evaluations to reach 0.9 of the true hypervolume
  (over the seeds that reached it, with how many did).

    python benchmarks/pareto.py --seeds 20 --budget 100 --strategies random rea local lmsearcher
    python benchmarks/pareto.py --with-peers   # also Optuna's samplers (optuna-tpe, -gp, -nsga2, -random)
    python benchmarks/pareto.py --pairs c10-pixel3-params --seeds 10 --with-peers   # three objectives
    python benchmarks/pareto.py --strategies lmsearcher --with-prior proxy:naswot   # also warm-started
    python benchmarks/pareto.py --runs-dir runs/bench-pareto   # kept: run it again after an interruption
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
from collm_nas.spaces import NB201Space

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
    p.add_argument("--runs-dir", type=Path, default=None,
                   help="keep the runs here (default: a temporary folder); a run finished in an earlier invocation "
                        "is scored again, not searched again, and one cut off is resumed")
    p.add_argument("--with-prior", metavar="PRIOR", default=None,
                   help="also run the strategies that take a prior (lmsearcher) warm-started from PRIOR, e.g. "
                        "proxy:naswot (no table value of any dataset); a row of its own, named STRATEGY+PRIOR")
    p.add_argument("--same-networks", choices=["skip", "evaluate"], default="skip",
                   help="codes of one network: skip (each network evaluated once, the default) or evaluate")
    p.add_argument("--score", choices=["networks", "codes"], default="networks",
                   help="networks (default): a code's accuracy is its network's mean over the codes the table "
                        "trained separately, its costs its own; codes: every code's own figures")
    p.add_argument("--with-peers", action="store_true",
                   help=f"also run the other libraries' searches ({', '.join(peer_names())}), one row each")
    args = p.parse_args(argv)
    if args.with_peers:
        args.strategies += [s for s in peer_names() if s not in args.strategies]
    if args.with_prior:
        args.strategies += [f"{s}+{args.with_prior}" for s in args.strategies if s in PRIOR_STRATEGIES]
    args.table = Settings().table_path(args.table)
    return args


def true_front(table_path: str, pair: str, score: str = "networks") -> dict:
    """The table's legal codes for a pair (or triple): their front, the reference point (the medians) and the
    front's hypervolume. Scoring by network, ``points`` holds every legal code's point in the objectives' own
    units: its network's mean accuracy and its own costs."""
    dataset, accuracy, *costs = PAIRS[pair]
    metrics = (accuracy, *costs)
    space = NB201Space()
    evaluator = NB201TableEvaluator(table_path, dataset=dataset)
    evaluator.want_metrics(list(metrics))
    objectives = Objectives.parse([f"{accuracy}:max", *(f"{cost}:min" for cost in costs)])
    legal = [c for c in evaluator.table.rows if not space.structural_problems(c)]
    raw = {t.ncode: tuple(float(t.metrics[m]) for m in metrics)
           for t in evaluator.evaluate(legal) if objectives.point(t) is not None}
    if score == "networks":  # one accuracy per network: the mean of its codes' separate trainings
        accuracies: dict[str, list[float]] = defaultdict(list)
        for code, figures in raw.items():
            accuracies[space.network_key(code)].append(figures[0])
        mean = {key: statistics.fmean(values) for key, values in accuracies.items()}
        raw = {code: (mean[space.network_key(code)], *figures[1:]) for code, figures in raw.items()}
    codes = list(raw)
    reference = tuple(statistics.median(v[k] for v in raw.values()) for k in range(len(metrics)))
    points = [objectives.signed(raw[code]) for code in codes]
    front = [codes[i] for i in non_dominated(points)]
    signed_reference = objectives.signed(reference)
    # The front's codes that beat the reference in every objective: the ones the hypervolume counts.
    counted = [code for code in front if all(x > r for x, r in zip(objectives.signed(raw[code]), signed_reference))]
    truth = {"objectives": objectives.specs(), "score": score, "reference": reference, "front": front,
             "counted": counted, "hypervolume": hypervolume(points, signed_reference)}
    if score == "networks":
        truth["points"] = raw
    return truth


def run_chunk(task: tuple) -> list[dict]:
    """One worker: its own Workspace (own SQLite file), its share of the searches."""
    runs_dir, table_path, llm, same_networks, fronts, jobs = task
    ws = Workspace(runs_dir, table_path=table_path)
    records = []
    for strategy, pair, seed, budget in jobs:
        truth = fronts[pair]
        objectives = Objectives.parse(truth["objectives"])
        started = time.perf_counter()
        # The id names everything the search depends on: a kept runs folder never answers for another setting.
        run_id = f"{strategy}-{pair}-s{seed}-b{budget}-{same_networks}".replace("+", "-").replace(":", "-")
        name, _, prior = strategy.partition("+")
        info = ws.store.get_run(run_id)
        if info is None:
            ws.search(space="nb201", dataset=PAIRS[pair][0], strategy=name, budget=budget, seed=seed,
                      run_id=run_id, llm=llm, objectives=truth["objectives"], prior=[prior] if prior else [],
                      same_networks=same_networks)
        elif info.status != "finished":  # cut off in an earlier invocation: it goes on, nothing repeated
            ws.resume(run_id)
        wall = time.perf_counter() - started if info is None else None  # a search's time only when run whole here
        trials = ws.run(run_id).trials()
        records.append({"strategy": strategy, "pair": pair, "seed": seed, "wall_s": wall,
                        **front_figures(trials, objectives, truth)})
    return records


def front_figures(trials: list[Trial], objectives: Objectives, truth: dict) -> dict:
    """Hypervolume ratio, share of the true front found, evaluations to 0.9 of the true hypervolume: an evaluated
    code counts with its network's mean accuracy (``truth`` scored by network) or with its own figures."""
    reference = objectives.signed(truth["reference"])
    by_network = truth["score"] == "networks"
    to_09 = None
    running: list[tuple[float, ...]] = []
    for n, t in enumerate(trials, start=1):
        p = objectives.point(t)
        if p is not None and by_network:
            p = objectives.signed(truth["points"][t.ncode])
        if p is not None:
            running.append(p)
            if to_09 is None and hypervolume(running, reference) >= 0.9 * truth["hypervolume"]:
                to_09 = n
    ratio = hypervolume(running, reference) / truth["hypervolume"]
    # Isomorphic codes of a network tie on every objective, so a front holds all of them: a front network is found
    # when any of its front codes was evaluated.
    key = NB201Space().network_key
    front = {key(c) for c in truth["front"]}
    counted = {key(c) for c in truth["counted"]}
    hit = {key(t.ncode) for t in trials if t.ok and t.ncode in set(truth["front"])}
    return {"hv_ratio": ratio, "front_found": len(hit) / len(front),
            "counted_found": len(hit & counted) / len(counted) if counted else None, "evals_to_0.9": to_09,
            "evaluations": len(trials)}


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
    lines = ["| pair | true front (networks) | strategy | HV ratio median (min-max) | true front found | "
             "of it beyond the reference (networks) found | evals to 0.9 HV (seeds) | s/search |",
             "|---|---|---|---|---|---|---|---|"]
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
                f"| {objectives} | {_networks(fronts[pair]['front'])} | {s} | {statistics.median(ratios):.3f} "
                f"({min(ratios):.3f}-{max(ratios):.3f}) | {statistics.mean(r['front_found'] for r in rs):.0%} | "
                f"{_counted_found(rs)} ({_networks(fronts[pair]['counted'])}) | {to} | {_mean_wall(rs)} |")
    return "\n".join(lines)


def _networks(codes: list[str]) -> int:
    key = NB201Space().network_key
    return len({key(c) for c in codes})


def _counted_found(records: list[dict]) -> str:
    shares = [r["counted_found"] for r in records if r.get("counted_found") is not None]
    return f"{statistics.mean(shares):.0%}" if shares else "–"


def _mean_wall(records: list[dict]) -> str:
    walls = [r["wall_s"] for r in records if r["wall_s"] is not None]
    return f"{statistics.mean(walls):.1f}" if walls else "(earlier)"


def plot(path: Path, table_path: str, pair: str, fronts: dict, root: Path, strategies: list[str],
         suffix: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dataset, accuracy, cost = PAIRS[pair]  # a pair (main() plots the first pair asked for)
    truth = fronts[pair]
    evaluator = NB201TableEvaluator(table_path, dataset=dataset)
    evaluator.want_metrics([accuracy, cost])
    figures = truth.get("points") or {t.ncode: (t.metrics[accuracy], t.metrics[cost])
                                      for t in evaluator.evaluate(list(evaluator.table.rows))}
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    xs = sorted((figures[k][1], figures[k][0]) for k in truth["front"])
    ax.step([x for x, _ in xs], [y for _, y in xs], where="post", color="black", label="true front")
    objectives = Objectives.parse(fronts[pair]["objectives"])
    for s in strategies:
        for worker in sorted(root.glob("worker*")):
            ws = Workspace(worker)
            run_id = f"{s}-{pair}-s0{suffix}".replace("+", "-").replace(":", "-")
            if ws.store.get_run(run_id) is None:
                continue
            found = [t for t in ws.run(run_id).trials() if objectives.point(t) is not None]
            mine = [figures[t.ncode] for t in found]
            front = [mine[i] for i in non_dominated([objectives.signed(m) for m in mine])]
            pts = sorted((c, a) for a, c in front)
            ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", markersize=3, linewidth=1, label=s)
    ref_acc, ref_cost = fronts[pair]["reference"]
    ax.plot([ref_cost], [ref_acc], marker="x", color="black", markersize=9, linestyle="none",
            label="reference (table medians)")
    best = max(figures[k][0] for k in truth["front"])
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
    fronts = {p: true_front(args.table, p, args.score) for p in args.pairs}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="collm-nas-pareto-") as tmp:
        root = args.runs_dir or Path(tmp)
        records = run_all(args, fronts, root)
        pairs = [p for p in args.pairs if len(PAIRS[p]) == 3]
        if args.plot and pairs:
            plot(args.plot, args.table, pairs[0], fronts, root, args.strategies,
                 f"-b{args.budget}-{args.same_networks}")
    print(f"{args.seeds} seeds x {args.budget} evaluations; codes of one network: {args.same_networks}; scored "
          f"{'with accuracy by network (the mean of its codes)' if args.score == 'networks' else 'by code'}; reference "
          f"point: the median of every objective; {time.perf_counter() - started:.0f} s in all\n")
    print(markdown(records, fronts, args.pairs, args.strategies))
    if args.out:
        kept = {pair: {k: v for k, v in truth.items() if k != "points"} for pair, truth in fronts.items()}
        args.out.write_text(json.dumps({"fronts": kept, "records": records}, indent=2))
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
