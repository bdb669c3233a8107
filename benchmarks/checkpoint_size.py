"""Checkpoint size against the number of trials, and the time of long searches.

For each strategy and batch size it runs real searches (LangGraph graph,
SQLite checkpointer, trial store, NB201 table evaluator) at each budget, with
checkpoint pruning as a search does it by default (the last checkpoint of
every round plus the ``keep_checkpoints`` newest, pruned every 25 rounds and
at the end; ``--keep`` changes it), and reads the database afterwards:

* checkpoints left, bytes of the latest checkpoint (``checkpoint`` +
  ``metadata`` blobs) and the mean and largest over the checkpoints left,
* pending writes left, and the database size: the file (with its WAL) and
  what each table and its indexes take (SQLite's ``dbstat``: checkpoints,
  writes, trials, rounds, the rest, and free pages),
* wall seconds of the search and evaluations per second.

The issue's target: a 10,000-evaluation batch-1 search stays under 50 MB.

    python benchmarks/checkpoint_size.py --strategies random --budgets 10 1000 10000 --batch-sizes 1 10
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import time
from pathlib import Path

from collm_nas import Workspace
from collm_nas.agents import STRATEGIES, llm_free_names
from collm_nas.core.settings import Settings

MB = 1_000_000
TARGET_MB = 50  # a 10,000-evaluation batch-1 search's database stays under this


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--strategies", nargs="+", default=list(llm_free_names()), choices=list(STRATEGIES))
    p.add_argument("--budgets", nargs="+", type=int, default=[10, 1000])
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 10])
    p.add_argument("--dataset", default="cifar10")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--table", default=None, help="nb201.csv.gz (default: settings)")
    p.add_argument("--keep", type=int, default=None,
                   help="checkpoints kept besides each round's last (default: settings, COLLM_NAS_KEEP_CHECKPOINTS)")
    p.add_argument("--out", type=Path, default=None, help="write the rows as JSON")
    args = p.parse_args(argv)
    settings = Settings()
    args.table = settings.table_path(args.table)
    args.keep = settings.keep_checkpoints if args.keep is None else args.keep
    args.settings = settings.model_copy(update={"keep_checkpoints": args.keep})
    return args


# Which table each b-tree of the database belongs to (indexes count with their table).
TABLE_OF = {"checkpoints": "checkpoints", "writes": "writes", "trials": "trials", "trials_by_run": "trials",
            "rounds": "rounds"}


def checkpoint_figures(db: Path, run_id: str) -> dict[str, float]:
    with sqlite3.connect(db) as conn:
        sizes = [row[0] for row in conn.execute(
            "SELECT length(checkpoint) + length(metadata) FROM checkpoints WHERE thread_id = ? ORDER BY checkpoint_id",
            (run_id,))]
        writes = conn.execute("SELECT count(*), coalesce(sum(length(value)), 0) FROM writes WHERE thread_id = ?",
                              (run_id,)).fetchone()
        tables: dict[str, int] = {}
        for name, table, size in conn.execute("SELECT name, tbl_name, pgsize FROM dbstat "
                                              "JOIN sqlite_master USING (name)"):
            key = TABLE_OF.get(name) or TABLE_OF.get(table) or "other"
            tables[key] = tables.get(key, 0) + size
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        tables["free"] = conn.execute("PRAGMA freelist_count").fetchone()[0] * page_size
    return {"checkpoints": len(sizes), "latest_bytes": sizes[-1], "mean_bytes": sum(sizes) / len(sizes),
            "max_bytes": max(sizes), "writes": writes[0], "write_bytes": writes[1],
            "table_bytes": {k: tables.get(k, 0) for k in ("checkpoints", "writes", "trials", "rounds", "other",
                                                          "free")}}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="collm-nas-ckpt-") as tmp:
        # Warm the table cache so the first search does not pay for reading the CSV.
        Workspace(Path(tmp) / "warm", settings=args.settings, table_path=args.table).search(
            dataset=args.dataset, strategy="random", budget=2, seed=0, run_id="warm")
        for strategy in args.strategies:
            for batch in args.batch_sizes:
                for budget in args.budgets:
                    runs_dir = Path(tmp) / f"{strategy}-b{batch}-n{budget}"
                    ws = Workspace(runs_dir, settings=args.settings, table_path=args.table)
                    started = time.perf_counter()
                    result = ws.search(dataset=args.dataset, strategy=strategy, budget=budget, seed=args.seed,
                                       batch_size=batch, run_id="run")
                    wall = time.perf_counter() - started
                    figs = checkpoint_figures(ws.db_path, "run")
                    # The file and its write-ahead log (the store keeps its connection open, so the WAL stays).
                    db_bytes = sum(p.stat().st_size for p in runs_dir.iterdir()
                                   if p.is_file() and p.name.startswith(ws.db_path.name))
                    rows.append({"strategy": strategy, "batch": batch, "budget": budget, "keep": args.keep,
                                 "evaluations": result.evaluations, "rounds": budget // batch, "wall_s": wall,
                                 "evals_per_s": result.evaluations / wall, "db_bytes": db_bytes, **figs})
    print(f"NAS-Bench-201 table evaluator, {args.dataset}, seed {args.seed}, pruning: each round's last "
          f"checkpoint and the {args.keep} newest\n")
    head = ["strategy", "batch", "trials", "checkpoints", "latest ckpt B", "mean ckpt B", "max ckpt B",
            "writes", "db file KiB", "ckpts KiB", "writes KiB", "trials KiB", "rounds KiB", "free KiB",
            "wall s", "evals/s"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        t = {k: v / 1024 for k, v in r["table_bytes"].items()}
        print(f"| {r['strategy']} | {r['batch']} | {r['evaluations']} | {r['checkpoints']} | {r['latest_bytes']} | "
              f"{r['mean_bytes']:.0f} | {r['max_bytes']} | {r['writes']} | {r['db_bytes'] / 1024:.0f} | "
              f"{t['checkpoints']:.0f} | {t['writes']:.0f} | {t['trials']:.0f} | {t['rounds']:.0f} | "
              f"{t['free']:.0f} | {r['wall_s']:.2f} | {r['evals_per_s']:.0f} |")
    for r in rows:
        if r["batch"] == 1 and r["evaluations"] >= 10_000:
            verdict = "under" if r["db_bytes"] < TARGET_MB * MB else "OVER"
            print(f"\n{r['strategy']}, {r['evaluations']} evaluations in batches of 1: database "
                  f"{r['db_bytes'] / MB:.1f} MB, {verdict} the {TARGET_MB} MB target")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
