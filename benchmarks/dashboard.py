"""Dashboard page times: the runs page with 500 runs, a 10,000-trial run page, and the trials API.

It fills a fresh runs folder with real searches (LangGraph graph, SQLite store, NB201 table evaluator):
``--runs`` small ones (random, rea and local, 10 evaluations each) and one of ``--trials`` evaluations
(random, batches of 200, or ``--big-batch``), starts a real ``collm-nas dashboard`` process on it and measures:

* over HTTP (urllib, one request at a time): each page's HTML plus every API request the page makes when
  it opens, and single API requests (the trials table's first page, sorted by a metric, filtered, the last
  page; the status the pages poll). ``cold``: the first request right after the server printed its URL
  (it reads the newest runs' trials in the background from then on), the median over ``--cold`` fresh
  servers; ``warm``: the median of ``--repeat`` more. The run page once more on a server that reads nothing ahead (``COLLM_NAS_DASHBOARD_PRELOAD=0``):
  its first request reads the 10,000 trials;
* in a real browser (Debian's chromium through Playwright, unless ``--no-browser``): from navigation to
  the page's ``data-ready`` mark, set once every panel is drawn from the API (a fresh server again, so
  the first visit is cold for the dashboard; the browser has loaded one stylesheet before).

The issue's target: each page opens in under a second. Run it under ``nice``; figures vary with load.

    python benchmarks/dashboard.py --runs 500 --trials 10000
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from collm_nas import Workspace
from collm_nas.core.settings import Settings

BIG = "big"
CHROMIUM = os.environ.get("COLLM_NAS_CHROMIUM", "/usr/bin/chromium")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=500, help="small runs in the store (default 500)")
    p.add_argument("--trials", type=int, default=10_000, help="evaluations of the big run (default 10000)")
    p.add_argument("--big-batch", type=int, default=200,
                   help="batch size of the big run (default 200; 1 gives one round per trial, 10,000 rounds)")
    p.add_argument("--repeat", type=int, default=5, help="warm repetitions per measurement (median)")
    p.add_argument("--cold", type=int, default=3, help="fresh servers per cold measurement (median)")
    p.add_argument("--no-browser", action="store_true", help="HTTP timings only")
    p.add_argument("--runs-dir", type=Path, default=None, help="reuse (or keep) this runs folder")
    p.add_argument("--table", default=None, help="nb201.csv.gz (default: settings)")
    args = p.parse_args(argv)
    args.table = Settings().table_path(args.table)
    return args


def fill(runs_dir: Path, table: str, small: int, trials: int, big_batch: int = 200) -> None:
    """``small`` 10-evaluation searches and one of ``trials`` evaluations (skipped when already there)."""
    ws = Workspace(runs_dir, table_path=table)
    have = {r.run_id for r in ws.runs()}
    started = time.perf_counter()
    strategies = ("random", "rea", "local")
    for i in range(small):
        run_id = f"small-{i:04d}"
        if run_id not in have:
            ws.search(strategy=strategies[i % 3], budget=10, batch_size=10, seed=i, run_id=run_id)
    if BIG not in have:
        ws.search(strategy="random", budget=trials, batch_size=big_batch, seed=0, run_id=BIG)
    print(f"store: {len(ws.runs())} runs, {ws.store.count_trials(BIG)} trials in '{BIG}' "
          f"(filled in {time.perf_counter() - started:.0f} s)", file=sys.stderr)


@contextmanager
def server(runs_dir: Path, table: str, preload: bool = True) -> Iterator[str]:
    env = dict(os.environ, COLLM_NAS_NB201_TABLE=table)
    if not preload:
        env["COLLM_NAS_DASHBOARD_PRELOAD"] = "0"
    env.pop("COLLM_NAS_STORE", None)
    env.pop("COLLM_NAS_DASHBOARD_TOKEN", None)
    proc = subprocess.Popen([sys.executable, "-m", "collm_nas.cli", "dashboard", "--port", "0", "--runs-dir",
                             str(runs_dir)], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline()
        if not line.startswith("collm-nas dashboard: http"):
            raise SystemExit(f"the dashboard did not start: {line!r}")
        yield line.split()[-1].rstrip("/")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)


def fetch(url: str) -> int:
    with urllib.request.urlopen(url, timeout=120) as r:
        return len(r.read())


def run_page_requests(base: str) -> list[str]:
    """What the run page asks for when it opens (see dashboard.js: runPage)."""
    api = f"{base}/api/runs/{BIG}"
    return [f"{base}/runs/{BIG}", api, f"{api}/curve?which=searched",
            f"{api}/trials?offset=0&limit=50&sort=eval&order=asc&q=&status=all", f"{api}/scatter",
            f"{api}/rounds?offset=0&limit=10"]


def timed(requests: list[str]) -> tuple[float, int]:
    started = time.perf_counter()
    size = sum(fetch(u) for u in requests)
    return time.perf_counter() - started, size


def http_rows(base: str, repeat: int, only: str = "") -> list[tuple[str, float, float, int]]:
    api = f"{base}/api/runs/{BIG}"
    cases: list[tuple[str, list[str]]] = [
        ("runs page, 500 runs (HTML + its first page of 100)",
         [f"{base}/", f"{base}/api/runs?offset=0&limit=100&sort=updated_at&order=desc&q="]),
        ("runs API: all 500 runs", [f"{base}/api/runs"]),
        ("10,000-trial run page (HTML + 5 API requests)", run_page_requests(base)),
        ("trials API: first page of 50", [f"{api}/trials?limit=50"]),
        ("trials API: sorted by cifar10_valid, best first", [f"{api}/trials?limit=50&sort=cifar10_valid&order=desc"]),
        ("trials API: filtered params_mb<=0.5 and cifar10_valid>85", [f"{api}/trials?limit=50&q=params_mb%3C%3D0.5"
                                                                      "%20and%20cifar10_valid%3E85"]),
        ("trials API: last page (offset 9950)", [f"{api}/trials?limit=50&offset=9950"]),
        ("status (what the pages poll)", [f"{api}/status"]),
    ]
    rows = []
    for name, requests in cases:
        if only not in name:
            continue
        cold, size = timed(requests)
        warm = statistics.median(timed(requests)[0] for _ in range(repeat)) if repeat else math.nan
        rows.append((name, cold, warm, size))
    return rows


def browser_rows(base: str, repeat: int, only: str = "") -> list[tuple[str, float, float, int]]:
    from playwright.sync_api import sync_playwright

    rows = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{base}/static/dashboard.css")  # the browser itself warm; the dashboard has read nothing yet
        errors: list[str] = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

        def opened(url: str) -> Callable[[], float]:
            def once() -> float:
                started = time.perf_counter()
                page.goto(url)
                page.wait_for_selector("body[data-ready='1']", timeout=60_000)
                return time.perf_counter() - started
            return once

        for name, url in [("runs page, 500 runs", f"{base}/"), ("10,000-trial run page", f"{base}/runs/{BIG}"),
                          ("compare page, 3 runs", f"{base}/compare?runs={BIG},small-0000,small-0001")]:
            if only not in name:
                continue
            once = opened(url)
            cold = once()
            warm = statistics.median(once() for _ in range(repeat)) if repeat else math.nan
            rows.append((name, cold, warm, 0))
        browser.close()
    if errors:
        print(f"browser console errors: {errors}", file=sys.stderr)
    return rows


def measure(rows_of: Callable[..., list], runs_dir: Path, args: argparse.Namespace) -> list[tuple]:
    """Each row's cold time (median over ``--cold`` fresh servers), warm time and bytes; the run page also on
    servers that read nothing ahead."""
    colds: dict[str, list[float]] = {}
    first: dict[str, tuple[float, int]] = {}
    for k in range(args.cold):
        for preload, only, suffix in ((True, "", ""), (False, "run page", "; nothing read ahead")):
            with server(runs_dir, args.table, preload) as base:
                for name, cold, warm, size in rows_of(base, args.repeat if k == 0 else 0, only):
                    colds.setdefault(name + suffix, []).append(cold)
                    first.setdefault(name + suffix, (warm, size))
    return [(name, statistics.median(values), *first[name]) for name, values in colds.items()]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        runs_dir = args.runs_dir or Path(tmp) / "runs"
        fill(runs_dir, args.table, args.runs, args.trials, args.big_batch)
        print(f"| over HTTP | cold, median of {args.cold} fresh servers (s) | warm, median of {args.repeat} (s) "
              "| bytes |")
        print("|---|---:|---:|---:|")
        for name, cold, warm, size in measure(http_rows, runs_dir, args):
            print(f"| {name} | {cold:.3f} | {warm:.3f} | {size:,} |")
        if not args.no_browser:
            print()
            print(f"| in chromium, navigation to drawn | cold, median of {args.cold} (s) | "
                  f"warm, median of {args.repeat} (s) |")
            print("|---|---:|---:|")
            for name, cold, warm, _ in measure(browser_rows, runs_dir, args):
                print(f"| {name} | {cold:.3f} | {warm:.3f} |")
        print(json.dumps({"runs": args.runs, "trials": args.trials, "repeat": args.repeat, "cold": args.cold,
                          "load": os.getloadavg()}), file=sys.stderr)


if __name__ == "__main__":
    main()
