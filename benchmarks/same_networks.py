"""One network, several codes: what evaluating each NAS-Bench-201 network once saves.

NAS-Bench-201 writes 4,929 networks with 15,284 legal codes (isomorphic cells, edges that never reach the
output). Every strategy runs twice per seed, side by side: ``--same-networks evaluate`` (every code on its
own, the behaviour before) and ``skip`` (the default: a code of a network the run holds is never evaluated).
Scoring counts the optimum's whole network: a search found it when it evaluated any code of it.

Printed per strategy and dataset, for both settings: the seeds that found the optimum, the median
evaluations they needed, the distinct networks among the evaluations, and the reported test accuracy of the
best architecture found.

    python benchmarks/same_networks.py --seeds 10 --strategies random rea local lmsearcher
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from collm_nas import Workspace
from collm_nas.agents import llm_free_names
from collm_nas.core.settings import Settings
from collm_nas.evaluators.nb201_table import DATASETS, load_table
from collm_nas.spaces import NB201Space

LABELS = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "imagenet16": "ImageNet16-120"}
SETTINGS = ("evaluate", "skip")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--strategies", nargs="+", default=["random", "rea", "local", "lmsearcher"],
                   choices=list(llm_free_names()))
    p.add_argument("--datasets", nargs="+", default=list(LABELS), choices=list(LABELS))
    p.add_argument("--seeds", type=int, default=10, help="seeds 0..N-1 per cell; default 10")
    p.add_argument("--budget", type=int, default=100, help="evaluations per search; default 100")
    p.add_argument("--workers", type=int, default=2, help="worker processes; default 2")
    p.add_argument("--table", default=None, help="NAS-Bench-201 table (default: COLLM_NAS_NB201_TABLE)")
    args = p.parse_args(argv)
    args.table = Settings().table_path(args.table)
    return args


def run_chunk(task: tuple[str, str, list[tuple[str, str, int, int, str]]]) -> list[dict]:
    runs_dir, table_path, jobs = task
    ws = Workspace(runs_dir, table_path=table_path)
    space = NB201Space()
    table = load_table(str(Path(table_path).expanduser().resolve()))
    out = []
    for strategy, dataset, seed, budget, setting in jobs:
        spec = DATASETS[dataset]
        optimum = space.network_key(table.best(spec.searched)[0])
        run_id = f"{strategy}-{dataset}-s{seed}-{setting}"
        started = time.perf_counter()
        r = ws.search(space="nb201", dataset=dataset, strategy=strategy, budget=budget, seed=seed, run_id=run_id,
                      llm="none", same_networks=setting)
        wall = time.perf_counter() - started
        codes = [t.ncode for t in ws.run(run_id).trials()]
        keys = [space.network_key(c) for c in codes]
        out.append({"strategy": strategy, "dataset": dataset, "seed": seed, "setting": setting,
                    "evaluations": len(codes), "networks": len(set(keys)),
                    "found_at": keys.index(optimum) + 1 if optimum in keys else None,
                    "reported": r.best.metrics.get(r.reported_metric) if r.best else None, "wall_s": wall})
    return out


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    jobs = [(s, d, seed, args.budget, setting) for s in args.strategies for d in args.datasets
            for seed in range(args.seeds) for setting in SETTINGS]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="collm-nas-same-") as tmp:
        workers = max(1, min(args.workers, len(jobs)))
        tasks = [(str(Path(tmp) / f"w{i}"), args.table, jobs[i::workers]) for i in range(workers)]
        if workers == 1:
            records = run_chunk(tasks[0])
        else:
            with mp.get_context("spawn").Pool(workers) as pool:
                records = [r for chunk in pool.map(run_chunk, tasks) for r in chunk]
    total = time.perf_counter() - started
    cells: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
    for r in records:
        cells[(r["strategy"], r["dataset"], r["setting"])].append(r)
    print(f"NAS-Bench-201, budget {args.budget}, seeds 0-{args.seeds - 1}, LLM-free strategies; found = the "
          "search evaluated a code of the optimum's network; evals = median evaluations to it over those seeds; "
          "networks = mean distinct networks among the evaluations")
    print()
    head = ["strategy", "dataset"] + [f"{col} ({setting})" for setting in SETTINGS
                                      for col in ("found", "evals", "networks", "acc")]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for s in args.strategies:
        for d in args.datasets:
            row = [s, LABELS[d]]
            for setting in SETTINGS:
                recs = cells[(s, d, setting)]
                hits = [r["found_at"] for r in recs if r["found_at"] is not None]
                accs = [r["reported"] for r in recs if r["reported"] is not None]
                row += [f"{len(hits)}/{len(recs)}", f"{statistics.median(hits):g}" if hits else "–",
                        f"{statistics.fmean(r['networks'] for r in recs):.1f}",
                        f"{statistics.fmean(accs):.2f}" if accs else "–"]
            print("| " + " | ".join(row) + " |")
    print()
    print(f"{len(records)} searches in {total:.0f} s wall ({os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
