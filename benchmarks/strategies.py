"""Benchmark the LLM-free strategies on NAS-Bench-201 through the real search loop.

Every (strategy, dataset, seed) is one ``Workspace.search`` (LangGraph graph,
SQLite checkpointer, trial store) on the table evaluator, in a temporary runs
directory. Per (strategy, dataset) it reports:

* the mean ± std of the reported test accuracy of the best architecture found
  (best by the searched metric),
* the share of seeds that found the space's best architecture by the searched
  metric, and the median number of evaluations it took them,
* the mean wall seconds per search.

    python benchmarks/strategies.py --seeds 20 --budget 100 --out strategies.json
    python benchmarks/strategies.py --strategies random rea local optuna-tpe optuna-gp   # beside Optuna's samplers
    python benchmarks/strategies.py --with-peers   # ours and every peer (optuna-*: the optuna extra)
    python benchmarks/strategies.py --strategies lmsearcher --with-prior --prior-for imagenet16=proxy:naswot \
        --runs-dir runs/bench-strategies   # kept: run it again after an interruption and it goes on
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from collm_nas import Workspace
from collm_nas.agents import STRATEGIES, llm_free_names, peer_names
from collm_nas.evaluators.nb201_table import DATASETS, load_table
from collm_nas.plotting import best_so_far, plot_curves
from collm_nas.core.settings import Settings

DEFAULT_DATASETS = ("cifar10", "cifar100", "imagenet16")
# Warm starts from ANOTHER dataset's results, never the target's own.
DEFAULT_PRIORS = {"cifar10": "table:cifar100_test", "cifar100": "table:cifar10_valid",
                  "imagenet16": "table:cifar100_test"}
PRIOR_STRATEGIES = ("lmsearcher",)
LABELS = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "imagenet16": "ImageNet16-120"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--strategies", nargs="+", default=list(llm_free_names()), choices=list(STRATEGIES))
    p.add_argument("--datasets", nargs="+", default=list(DEFAULT_DATASETS), choices=list(DATASETS))
    p.add_argument("--seeds", type=int, default=20, help="number of seeds (0..N-1) per cell; default 20")
    p.add_argument("--budget", type=int, default=100, help="evaluations per search; default 100")
    p.add_argument("--batch-size", type=int, default=None, help="architectures per round (default: strategy's)")
    p.add_argument("--workers", type=int, default=2, help="worker processes, one Workspace each; default 2")
    p.add_argument("--table", default=None,
                   help="nb201.csv.gz (default: $COLLM_NAS_NB201_TABLE or the settings default)")
    p.add_argument("--out", type=Path, default=None, help="write the summary and every search as JSON")
    p.add_argument("--runs-dir", type=Path, default=None,
                   help="keep the runs and each finished search's record here; run again, the same command goes on "
                        "where it stopped (default: a temporary folder, removed at the end)")
    p.add_argument("--plot", type=Path, default=None,
                   help="write best-so-far test accuracy against evaluations (mean and min-max over seeds) as PNG")
    p.add_argument("--with-prior", action="store_true",
                   help="also run each LLM-free-capable ranking strategy warm-started from another dataset "
                        "(see --prior-for); reported as its own row, naming the prior")
    p.add_argument("--prior-for", action="append", default=[], metavar="DATASET=PRIOR",
                   help=f"prior per target dataset (default: {', '.join(f'{k}={v}' for k, v in DEFAULT_PRIORS.items())})")
    p.add_argument("--llm", default="none", help="LLM for LLM strategies: none (their LLM-free fallback), local, endpoint")
    p.add_argument("--with-peers", action="store_true",
                   help=f"also run the other libraries' searches ({', '.join(peer_names())}), one row each")
    args = p.parse_args(argv)
    if args.with_peers:
        args.strategies += [s for s in peer_names() if s not in args.strategies]
    if args.seeds < 1 or args.workers < 1 or args.budget < 1:
        p.error("--seeds, --workers and --budget must be at least 1")
    args.table = Settings().table_path(args.table)
    args.priors = dict(DEFAULT_PRIORS)
    for item in args.prior_for:
        dataset, _, prior = item.partition("=")
        args.priors[dataset] = prior
    return args


def space_best(table_path: str, datasets: list[str]) -> dict[str, dict]:
    """The best architecture of the whole table per dataset, by its searched metric."""
    table = load_table(str(Path(table_path).expanduser().resolve()))
    out = {}
    for ds in datasets:
        spec = DATASETS[ds]
        code, value = table.best(spec.searched)
        out[ds] = {"ncode": code, "searched": value, "reported": table.value(code, spec.reported),
                   "searched_metric": spec.searched, "reported_metric": spec.reported}
    return out


def run_chunk(task: tuple[str, str, int | None, str, list[tuple[str, str, int, int, str | None]]]) -> list[dict]:
    """One worker: its own Workspace (own SQLite file), its share of the searches."""
    runs_dir, table_path, batch_size, llm, jobs = task
    ws = Workspace(runs_dir, table_path=table_path)
    done_dir = Path(runs_dir).parent / "records"
    done_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for label, dataset, seed, budget, prior in jobs:
        strategy = label.split("+")[0]
        # The run's id names what it searched: a kept runs folder must never answer for another prior.
        run_id = f"{label.replace('+', '-')}-{dataset}-s{seed}-b{budget}"
        if prior:
            run_id += "-" + "".join(c if c.isalnum() else "-" for c in prior)
        done = done_dir / f"{run_id}.json"
        if done.exists():  # finished in an earlier invocation
            records.append(json.loads(done.read_text()))
            continue
        started = time.perf_counter()
        info = ws.store.get_run(run_id)
        if info is not None and info.status == "finished":  # finished, its record not written yet
            r = ws.result(run_id)
        elif info is not None:  # cut off in an earlier invocation: it goes on, nothing repeated
            r = ws.resume(run_id)
        else:
            r = ws.search(space="nb201", dataset=dataset, strategy=strategy, budget=budget, seed=seed,
                          batch_size=batch_size, run_id=run_id, llm=llm, prior=[prior] if prior else [])
        wall = time.perf_counter() - started
        curve = best_so_far(ws.run(run_id).trials(), r.config.get("mode", "max"), r.reported_metric)
        records.append({
            "strategy": label, "dataset": dataset, "seed": seed, "prior": prior,
            "status": r.status, "stop_reason": r.stop_reason, "evaluations": r.evaluations,
            "best_ncode": r.best.ncode if r.best else None,
            "searched": r.best.metrics.get(r.searched_metric) if r.best else None,
            "reported": r.best.metrics.get(r.reported_metric) if r.best else None,
            "found_at": r.found_at, "wall_s": wall, "curve": curve,
        })
        done.write_text(json.dumps(records[-1]))
    return records


def run_all(args: argparse.Namespace, runs_root: Path) -> list[dict]:
    jobs = [(s, d, seed, args.budget, None) for s in args.strategies for d in args.datasets for seed in range(args.seeds)]
    if args.with_prior:
        jobs += [(f"{s}+prior", d, seed, args.budget, args.priors[d]) for s in args.strategies if s in PRIOR_STRATEGIES
                 for d in args.datasets for seed in range(args.seeds)]
    workers = min(args.workers, len(jobs))
    # Round-robin split: every worker gets a similar mix of strategies and datasets.
    tasks = [(str(runs_root / f"worker{i}"), args.table, args.batch_size, args.llm, jobs[i::workers])
             for i in range(workers)]
    if workers == 1:
        return run_chunk(tasks[0])
    with mp.get_context("spawn").Pool(workers) as pool:
        return [rec for chunk in pool.map(run_chunk, tasks) for rec in chunk]


def summarise(records: list[dict], best: dict[str, dict]) -> dict[str, dict[str, dict]]:
    cells: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for rec in records:
        cells[(rec["strategy"], rec["dataset"])].append(rec)
    summary: dict[str, dict[str, dict]] = defaultdict(dict)
    for (strategy, dataset), recs in cells.items():
        accs = [r["reported"] for r in recs if r["reported"] is not None]
        hits = [r for r in recs if r["best_ncode"] == best[dataset]["ncode"]]
        summary[strategy][dataset] = {
            "seeds": len(recs),
            "acc_mean": statistics.fmean(accs) if accs else None,
            "acc_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
            "searched_mean": statistics.fmean(r["searched"] for r in recs if r["searched"] is not None),
            "found": len(hits),
            "found_share": len(hits) / len(recs),
            "median_evals_to_best": statistics.median(r["found_at"] for r in hits) if hits else None,
            "mean_wall_s": statistics.fmean(r["wall_s"] for r in recs),
            "mean_evaluations": statistics.fmean(r["evaluations"] for r in recs),
        }
    return summary


def markdown(summary: dict, strategies: list[str], datasets: list[str]) -> str:
    head = ["strategy"] + [f"{LABELS[d]} {col}" for d in datasets
                           for col in ("acc mean±std", "found %", "median evals")] + ["wall s/search"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in strategies:
        # A ranking strategy's row without a prior says so: its "+prior" row is warm-started from other data.
        row = [f"{s} (no prior)" if s in PRIOR_STRATEGIES else s]
        walls = []
        for d in datasets:
            c = summary[s][d]
            med = "–" if c["median_evals_to_best"] is None else f"{c['median_evals_to_best']:g}"
            row += [f"{c['acc_mean']:.2f} ± {c['acc_std']:.2f}",
                    f"{100 * c['found_share']:.0f}% ({c['found']}/{c['seeds']})",
                    f"{med} (n={c['found']})"]
            walls.append(c["mean_wall_s"])
        row.append(f"{statistics.fmean(walls):.2f}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    best = space_best(args.table, args.datasets)
    started = time.perf_counter()
    if args.runs_dir is not None:
        records = run_all(args, args.runs_dir)
    else:
        with tempfile.TemporaryDirectory(prefix="collm-nas-bench-") as tmp:
            records = run_all(args, Path(tmp))
    total = time.perf_counter() - started
    summary = summarise(records, best)
    print(f"NAS-Bench-201, budget {args.budget}, {args.seeds} seeds, batch size "
          f"{args.batch_size or 'strategy default'}, {args.workers} workers, table {args.table}")
    for d in args.datasets:
        b = best[d]
        print(f"  {LABELS[d]}: searched on {b['searched_metric']}, reported {b['reported_metric']}; space best "
              f"{b['ncode']} ({b['searched_metric']} {b['searched']:.2f}, {b['reported_metric']} {b['reported']:.2f})")
    print()
    labels = list(dict.fromkeys(rec["strategy"] for rec in records))
    print(markdown(summary, labels, args.datasets))
    if args.with_prior:
        print("\n+prior rows: warm-started from " + ", ".join(f"{LABELS[d]} <- {args.priors[d]}" for d in args.datasets))
    print()
    print(f"{len(records)} searches in {total:.1f} s wall ({os.cpu_count()} CPUs); "
          "acc = reported test accuracy (%) of the best-by-searched-metric architecture found; "
          "median evals over the seeds that found the space's best (n).")
    if args.plot:
        curves: dict[str, dict[str, list[list[float]]]] = {}
        for rec in records:
            curves.setdefault(LABELS[rec["dataset"]], {}).setdefault(rec["strategy"], []).append(rec["curve"])
        plot_curves(curves, args.plot, title=f"NAS-Bench-201, budget {args.budget}, {args.seeds} seeds "
                    "(line: mean; band: min-max)")
        print(f"wrote {args.plot}")
    if args.out:
        args.out.write_text(json.dumps({"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                                        "space_best": best, "summary": summary, "searches": records}, indent=2))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
