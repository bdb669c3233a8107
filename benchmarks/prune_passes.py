"""How long each checkpoint-pruning pass of a long search takes, on SQLite or PostgreSQL.

Runs one batch-1 search on the table evaluator (pruned every 25 rounds, as
every search is) and times each pass; on PostgreSQL it also counts the
channel blobs that no checkpoint refers to afterwards (there should be none).

    python benchmarks/prune_passes.py --budget 800                                   # SQLite, a temporary folder
    python benchmarks/prune_passes.py --budget 800 --store postgresql://USER@HOST/DB  # an empty database
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from collm_nas import Workspace
from collm_nas.core.settings import Settings


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget", type=int, default=800, help="evaluations = rounds (batch size 1); default 800")
    p.add_argument("--strategy", default="rea")
    p.add_argument("--store", default=None, help="a PostgreSQL URL (an empty database); default: SQLite")
    p.add_argument("--table", default=None, help="nb201.csv.gz (default: settings)")
    args = p.parse_args(argv)
    args.table = Settings().table_path(args.table)
    return args


def orphan_blobs(url: str, run_id: str) -> int:
    import psycopg

    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT count(*) FROM checkpoint_blobs b WHERE b.thread_id = %s AND NOT EXISTS (SELECT 1 FROM "
            "checkpoints c WHERE c.thread_id = b.thread_id AND c.checkpoint_ns = b.checkpoint_ns AND "
            "c.checkpoint -> 'channel_versions' ->> b.channel = b.version)", (run_id,)).fetchone()[0]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="collm-nas-prune-") as tmp:
        ws = Workspace(Path(tmp) / "runs", table_path=args.table, store=args.store)
        store = ws.store
        passes: list[tuple[float, object]] = []
        prune = store.prune_checkpoints

        def timed(run_id: str, keep: int):
            started = time.perf_counter()
            report = prune(run_id, keep)
            passes.append((time.perf_counter() - started, report))
            return report

        store.prune_checkpoints = timed  # type: ignore[method-assign]
        started = time.perf_counter()
        ws.search(strategy=args.strategy, budget=args.budget, batch_size=1, seed=0, run_id="long")
        wall = time.perf_counter() - started
        store.prune_checkpoints = prune  # type: ignore[method-assign]
        print(f"{args.strategy}, {args.budget} rounds of one evaluation on {ws.location}: {wall:.1f} s\n")
        print("| pass | after round | ms | checkpoints kept | deleted | blobs deleted |")
        print("|---|---|---|---|---|---|")
        for i, (seconds, report) in enumerate(passes, start=1):
            if i % 4 == 1 or i == len(passes):
                after = "end" if i == len(passes) else str(25 * i)
                print(f"| {i} | {after} | {seconds * 1000:.0f} | {report.kept} | {report.deleted} | "
                      f"{report.details.get('blobs_deleted', '-')} |")
        if args.store:
            print(f"\nchannel blobs no checkpoint refers to: {orphan_blobs(ws.store_url, 'long')}")


if __name__ == "__main__":
    main()
