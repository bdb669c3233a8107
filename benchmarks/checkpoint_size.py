"""Checkpoint size against the number of trials, and the time of long searches.

For each strategy and batch size it runs real searches (LangGraph graph,
SQLite checkpointer, trial store, NB201 table evaluator) at two budgets and
reads the database afterwards:

* bytes of the latest checkpoint (``checkpoint`` + ``metadata`` blobs) and the
  mean over every checkpoint of the run,
* bytes of the pending writes per step, checkpoints written, and the database
  file size (checkpoints + trials),
* wall seconds of the search and evaluations per second.

    python benchmarks/checkpoint_size.py --budgets 10 1000 --batch-sizes 1 10
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import time
from pathlib import Path

from collm_nas import Workspace
from collm_nas.agents import LLM_FREE_STRATEGIES, STRATEGIES
from collm_nas.settings import Settings


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--strategies", nargs="+", default=list(LLM_FREE_STRATEGIES), choices=list(STRATEGIES))
    p.add_argument("--budgets", nargs="+", type=int, default=[10, 1000])
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 10])
    p.add_argument("--dataset", default="cifar10")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--table", default=None, help="nb201.csv.gz (default: settings)")
    p.add_argument("--out", type=Path, default=None, help="write the rows as JSON")
    args = p.parse_args(argv)
    args.table = Settings().table_path(args.table)
    return args


def checkpoint_figures(db: Path, run_id: str) -> dict[str, float]:
    with sqlite3.connect(db) as conn:
        sizes = [row[0] for row in conn.execute(
            "SELECT length(checkpoint) + length(metadata) FROM checkpoints WHERE thread_id = ? ORDER BY checkpoint_id",
            (run_id,))]
        writes = conn.execute("SELECT count(*), coalesce(sum(length(value)), 0) FROM writes WHERE thread_id = ?",
                              (run_id,)).fetchone()
    return {"checkpoints": len(sizes), "latest_bytes": sizes[-1], "mean_bytes": sum(sizes) / len(sizes),
            "max_bytes": max(sizes), "write_bytes_per_checkpoint": writes[1] / len(sizes)}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="collm-nas-ckpt-") as tmp:
        # Warm the table cache so the first search does not pay for reading the CSV.
        Workspace(Path(tmp) / "warm", table_path=args.table).search(
            dataset=args.dataset, strategy="random", budget=2, seed=0, run_id="warm")
        for strategy in args.strategies:
            for batch in args.batch_sizes:
                for budget in args.budgets:
                    runs_dir = Path(tmp) / f"{strategy}-b{batch}-n{budget}"
                    ws = Workspace(runs_dir, table_path=args.table)
                    started = time.perf_counter()
                    result = ws.search(dataset=args.dataset, strategy=strategy, budget=budget, seed=args.seed,
                                       batch_size=batch, run_id="run")
                    wall = time.perf_counter() - started
                    figs = checkpoint_figures(ws.db_path, "run")
                    db_bytes = sum(p.stat().st_size for p in runs_dir.iterdir() if p.is_file())
                    rows.append({"strategy": strategy, "batch": batch, "budget": budget,
                                 "evaluations": result.evaluations, "wall_s": wall,
                                 "evals_per_s": result.evaluations / wall, "db_bytes": db_bytes, **figs})
    print(f"NAS-Bench-201 table evaluator, {args.dataset}, seed {args.seed}\n")
    head = ["strategy", "batch", "trials", "checkpoints", "latest ckpt B", "mean ckpt B", "max ckpt B",
            "writes B/ckpt", "db file KiB", "wall s", "evals/s"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print(f"| {r['strategy']} | {r['batch']} | {r['evaluations']} | {r['checkpoints']} | {r['latest_bytes']} | "
              f"{r['mean_bytes']:.0f} | {r['max_bytes']} | {r['write_bytes_per_checkpoint']:.0f} | "
              f"{r['db_bytes'] / 1024:.0f} | {r['wall_s']:.2f} | {r['evals_per_s']:.0f} |")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
