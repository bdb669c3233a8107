"""LM-Searcher's tuned ranker, measured: does fine-tuning on other datasets' trajectories make SmolLM2 pick better?

The cross-domain protocol of the paper, on what this machine can run:

* ``data``: finished runs to learn from and to test on, each a real search through ``Workspace.search``.
  Training: NAS-Bench-201 on CIFAR-10 and CIFAR-100 (random, REA, local search and the learned-ranker
  lmsearcher, several seeds) and the ``examples/digits_mlp.yaml`` space (real MLP training on digits).
  Testing: random search on NAS-Bench-201 ImageNet16-120 (a dataset it never trained on) and on the
  MobileNetV3-like ``mbv3`` space trained on digits (a space it never saw). Samples are exported in the
  compact format (``collm-nas export-trajectories``'s default).
* ``train``: ``collm-nas finetune`` on the training samples (timed; its log is kept).
* ``picks``: on the held-out pools of the test runs, the share of pools where a ranker picks the truly best
  code and the mean true rank of its pick (1 = best of 10): random picking, the untuned model (with the
  prompt the search gives it, and with the compact one), the tuned model, and the learned GP ranker fitted
  on the same history. The LLMs answer through the real ranker path (llama.cpp server, grammar).
* ``search``: full searches (``lmsearcher``, 100 evaluations, ImageNet16-120): random search, the untuned
  local model and the tuned one, several seeds.
* ``report``: the Markdown tables from what the stages stored.

    python benchmarks/ranker_finetune.py data --work /tmp/rft
    python benchmarks/ranker_finetune.py train --work /tmp/rft --max-samples 400 --epochs 1
    python benchmarks/ranker_finetune.py picks --work /tmp/rft
    python benchmarks/ranker_finetune.py search --work /tmp/rft --seeds 3
    python benchmarks/ranker_finetune.py report --work /tmp/rft
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # examples.digits_mlp is imported from the repository root
    sys.path.insert(0, str(ROOT))

from collm_nas import Workspace  # noqa: E402
from collm_nas.trajectories import export_trajectories  # noqa: E402

TRAIN_STRATEGIES = ("random", "rea", "local", "lmsearcher")
DIGITS = {"space": str(ROOT / "examples" / "digits_mlp.yaml"), "evaluator": "examples.digits_mlp:evaluate",
          "metric": "valid_acc"}
# The unseen space: mbv3 networks trained one epoch on digits (a few seconds each on one core).
MBV3 = {"space": "mbv3", "evaluator": "train", "dataset": "digits",
        "train_options": {"epochs": 1, "threads": 1, "width_mult": 0.25}}


def _say(text: str) -> None:
    print(text, flush=True)


# ====================================================================== data
def stage_data(args: argparse.Namespace) -> None:
    work = args.work
    ws = Workspace(work / "runs", table_path=args.table)
    done = {info.run_id for info in ws.runs() if info.status == "finished"}

    def run(run_id: str, **spec: Any) -> str:
        if run_id not in done:
            started = time.perf_counter()
            ws.search(run_id=run_id, llm="none", **spec)
            _say(f"  {run_id}: {time.perf_counter() - started:.1f}s")
        return run_id

    _say("training runs (NAS-Bench-201 CIFAR-10 / CIFAR-100, digits MLP)")
    nb201 = [run(f"train-{ds}-{strategy}-{seed}", space="nb201", evaluator="table", dataset=ds, strategy=strategy,
                 budget=100, seed=seed)
             for ds in ("cifar10", "cifar100") for strategy in TRAIN_STRATEGIES for seed in range(args.train_seeds)]
    digits = [run(f"train-digits-{strategy}-{seed}", strategy=strategy, budget=60, seed=seed, **DIGITS)
              for strategy in ("random", "rea") for seed in range(2)]
    _say("test runs (NAS-Bench-201 ImageNet16-120; mbv3 on digits)")
    imagenet = [run(f"test-imagenet16-random-{seed}", space="nb201", evaluator="table", dataset="imagenet16",
                    strategy="random", budget=60, seed=100 + seed) for seed in range(args.test_seeds)]
    mbv3 = [run("test-mbv3-random-0", strategy="random", budget=args.mbv3_budget, seed=100, **MBV3)]

    def export(name: str, run_ids: list[str], stride: int) -> None:
        count = export_trajectories([ws.run(r) for r in run_ids], work / name, stride=stride)
        _say(f"  {name}: {count} samples from {len(run_ids)} runs")

    export("train.jsonl", nb201 + digits, args.stride)
    export("test-imagenet16.jsonl", imagenet, 2)
    export("test-mbv3.jsonl", mbv3, 1)


# ===================================================================== train
def stage_train(args: argparse.Namespace) -> None:
    out = args.work / "tuned"
    command = [sys.executable, "-m", "collm_nas.cli", "finetune", "--data", str(args.work / "train.jsonl"),
               "--out", str(out), "--epochs", str(args.epochs), "--max-samples", str(args.max_samples),
               "--seed", "0", "--device", "cpu", "--lr", str(args.lr), "--no-progress"]
    _say(" ".join(command))
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"finetune failed with exit code {done.returncode}")
    manifest = json.loads((out / "ranker.json").read_text())
    (args.work / "train-result.json").write_text(json.dumps({"wall_s": seconds, "manifest": manifest}, indent=1))
    _say(f"fine-tune took {seconds:.0f}s wall")


# ===================================================================== picks
TEST_SETS = {"imagenet16": ("NAS-Bench-201 ImageNet16-120 (unseen dataset)", "test-imagenet16-random-"),
             "mbv3": ("mbv3 on digits (unseen space)", "test-mbv3-random-")}


def _pools(ws: Workspace, prefix: str, limit: int) -> list[dict[str, Any]]:
    """Every test pool with its run, step, space and history: the same pools export-trajectories wrote."""
    from collm_nas.engine import resolve_space
    from collm_nas.trajectories import run_samples

    pools = []
    for info in sorted(ws.runs(), key=lambda i: i.run_id):
        if not info.run_id.startswith(prefix):
            continue
        run = ws.run(info.run_id)
        trials = [t for t in run.trials() if t.ok]
        stride = 2 if prefix.startswith("test-imagenet16") else 1
        for sample in run_samples(run, stride=stride):
            step = sample["meta"]["step"]
            pools.append({"run": run, "space": resolve_space(run.config), "trials": trials[:step],
                          "pool": list(sample["pool"]), "values": sample["pool"], "answer": sample["answer"],
                          "mode": run.config.mode, "metric": run.config.metric or "value"})
    if limit and len(pools) > limit:
        pools = random.Random(0).sample(pools, limit)
    return pools


def _rank_of(item: dict[str, Any], code: str | None) -> int:
    values, sign = item["values"], 1.0 if item["mode"] == "max" else -1.0
    if code is None or code not in values:
        return len(values)
    return 1 + sum(1 for v in values.values() if sign * v > sign * values[code])


def _random_figures(items: list[dict[str, Any]]) -> tuple[float, float]:
    """Expected hit rate and mean rank of a uniform pick, exactly."""
    hits = sum(sum(1 for c in it["values"] if _rank_of(it, c) == 1) / len(it["values"]) for it in items)
    ranks = sum(sum(_rank_of(it, c) for c in it["values"]) / len(it["values"]) for it in items)
    return hits / len(items), ranks / len(items)


def _llm_picks(items: list[dict[str, Any]], options: dict[str, Any], style: str | None) -> dict[str, Any]:
    from collm_nas.agents.llm_session import open_llm

    picks, seconds, failed = [], [], 0
    with open_llm("local", options, roles=("ranker",)) as roles:
        if style is not None:
            roles.ranker_style = style
        ranker, chat = roles.ranker(), roles.chat("ranker")
        for it in items:
            started = time.perf_counter()
            outcome = ranker.pick(chat, it["space"], it["trials"], it["pool"], mode=it["mode"], max_redraws=0,
                                  metric=it["metric"])
            seconds.append(time.perf_counter() - started)
            failed += outcome.code is None
            picks.append(outcome.code)
    return {"picks": picks, "seconds": statistics.mean(seconds), "failed": failed}


def _learned_picks(items: list[dict[str, Any]]) -> list[str]:
    from collm_nas.agents.surrogate import LearnedRanker

    picks = []
    for it in items:
        ranker = LearnedRanker(it["space"], mode=it["mode"], acquisition="ei", seed=0)
        ranker.fit([t.ncode for t in it["trials"]], [t.value for t in it["trials"]])
        picks.append(ranker.rank(it["pool"])[0])
    return picks


def stage_picks(args: argparse.Namespace) -> None:
    ws = Workspace(args.work / "runs", table_path=args.table)
    model = str(args.model or args.work / "tuned")
    results: dict[str, Any] = {}
    for name, (label, prefix) in TEST_SETS.items():
        items = _pools(ws, prefix, args.pools)
        rows = {}
        hit, rank = _random_figures(items)
        rows["random pick"] = {"accuracy": hit, "mean_rank": rank}
        learned = _learned_picks(items)
        rows["learned GP ranker (EI)"] = _score(items, learned)
        llm_rows = [("untuned SmolLM2, full prompt (as searches ask it)", {}, None),
                    ("untuned SmolLM2, compact prompt, temperature 0", {"ranker.temperature": 0.0}, "compact"),
                    ("tuned SmolLM2 (compact prompt, temperature 0)", {"model": model}, None)]
        for extra in args.also:
            row_label, _, folder = extra.partition("=")
            llm_rows.append((row_label, {"model": folder}, None))
        for row, options, style in llm_rows:
            _say(f"{name}: {row} on {len(items)} pools ...")
            got = _llm_picks(items, options, style)
            rows[row] = {**_score(items, got["picks"]), "s_per_pick": got["seconds"], "failed": got["failed"]}
        results[name] = {"label": label, "pools": len(items), "rows": rows}
        (args.work / "picks-result.json").write_text(json.dumps(results, indent=1))
    print(_picks_table(results))


def _score(items: list[dict[str, Any]], picks: list[str | None]) -> dict[str, float]:
    ranks = [_rank_of(it, code) for it, code in zip(items, picks)]
    return {"accuracy": sum(r == 1 for r in ranks) / len(ranks), "mean_rank": statistics.mean(ranks)}


def _picks_table(results: dict[str, Any]) -> str:
    lines = []
    for name, res in results.items():
        lines += [f"\n{res['label']}: {res['pools']} held-out pools of 10\n",
                  "| ranker | picks the truly best | mean true rank of the pick (1-10) | s / pick |",
                  "|---|---|---|---|"]
        for row, fig in res["rows"].items():
            secs = f"{fig['s_per_pick']:.2f}" if "s_per_pick" in fig else "-"
            lines.append(f"| {row} | {fig['accuracy']:.1%} | {fig['mean_rank']:.2f} | {secs} |")
    return "\n".join(lines)


# ==================================================================== search
SEARCH_ROWS = {"random": {"strategy": "random", "llm": "none"},
               "untuned": {"strategy": "lmsearcher", "llm": "local"},
               "tuned": {"strategy": "lmsearcher", "llm": "local", "tuned": True}}


def stage_search(args: argparse.Namespace) -> None:
    from collm_nas.evaluators.nb201_table import DATASETS, load_table

    ws = Workspace(args.work / "search-runs", table_path=args.table)
    store = args.work / "search-result.json"
    results = json.loads(store.read_text()) if store.is_file() else {}
    spec = DATASETS["imagenet16"]
    table = load_table(str(Path(ws.table_path).resolve()))
    best_code, _ = table.best(spec.searched)
    for row in args.rows:
        for seed in range(args.seeds):
            key = f"{row}-{seed}"
            if key in results:
                continue
            cfg = dict(SEARCH_ROWS[row])
            extra = {"llm_model": str(args.model or args.work / "tuned")} if cfg.pop("tuned", False) else {}
            started = time.perf_counter()
            r = ws.search(run_id=f"search-{key}", space="nb201", evaluator="table", dataset="imagenet16",
                          budget=100, seed=seed, **cfg, **extra)
            best = r.best
            results[key] = {"row": row, "seed": seed, "seconds": time.perf_counter() - started,
                            "reported": table.value(best.ncode, spec.reported), "found_best": best.ncode == best_code,
                            "llm": ws.run(f"search-{key}").llm_summary()}
            store.write_text(json.dumps(results, indent=1))
            _say(f"  {key}: best {results[key]['reported']:.2f} in {results[key]['seconds']:.0f}s")
    print(_search_table(results))


def _search_table(results: dict[str, Any]) -> str:
    labels = {"random": "random search", "untuned": "lmsearcher --llm local (untuned SmolLM2)",
              "tuned": "lmsearcher --llm local --llm-model TUNED"}
    lines = ["| ImageNet16-120, 100 evaluations | seeds | reported test accuracy (mean ± std) | found the best | "
             "s / search | LLM calls / search | s / call |", "|---|---|---|---|---|---|---|"]
    for row, label in labels.items():
        got = [v for v in results.values() if v["row"] == row]
        if not got:
            continue
        acc = [v["reported"] for v in got]
        std = statistics.stdev(acc) if len(acc) > 1 else 0.0
        llm = [v["llm"] for v in got if v.get("llm")]
        calls = f"{statistics.mean(x['calls'] for x in llm):.0f}" if llm else "-"
        per = f"{statistics.mean(x['latency_per_call_s'] for x in llm if x['calls']):.2f}" if llm else "-"
        lines.append(f"| {label} | {len(got)} | {statistics.mean(acc):.2f} ± {std:.2f} | "
                     f"{sum(v['found_best'] for v in got)}/{len(got)} | "
                     f"{statistics.mean(v['seconds'] for v in got):.0f} | {calls} | {per} |")
    return "\n".join(lines)


def stage_report(args: argparse.Namespace) -> None:
    train = args.work / "train-result.json"
    if train.is_file():
        t = json.loads(train.read_text())
        m = t["manifest"]
        _say(f"fine-tune: {m['samples']['train']} training samples ({m['samples']['given']} given), "
             f"{m['steps']} steps, {m['train_seconds']:.0f}s training ({t['wall_s']:.0f}s wall with loading and "
             f"export), final batch loss {m['final_loss']:.3f}")
        for e in m["epochs"]:
            _say(f"  held-out after epoch {e['epoch']}: {e['accuracy']:.1%} truly best, mean rank {e['mean_rank']:.2f}"
                 f" ({e['pools']} pools)")
    picks = args.work / "picks-result.json"
    if picks.is_file():
        print(_picks_table(json.loads(picks.read_text())))
    search = args.work / "search-result.json"
    if search.is_file():
        print()
        print(_search_table(json.loads(search.read_text())))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("stage", choices=["data", "train", "picks", "search", "report"])
    p.add_argument("--work", type=Path, required=True, help="folder for the runs, samples, model and results")
    p.add_argument("--table", default=None, help="nb201.csv.gz (default: $COLLM_NAS_NB201_TABLE)")
    p.add_argument("--train-seeds", type=int, default=3, help="seeds per training (dataset, strategy); default 3")
    p.add_argument("--test-seeds", type=int, default=4, help="ImageNet16-120 test runs; default 4")
    p.add_argument("--mbv3-budget", type=int, default=40, help="evaluations of the unseen-space test run")
    p.add_argument("--stride", type=int, default=4, help="one training sample every N steps of a run; default 4")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--max-samples", type=int, default=330)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--model", type=Path, default=None, help="the tuned model folder (default: WORK/tuned)")
    p.add_argument("--seeds", type=int, default=3, help="search seeds per row; default 3")
    p.add_argument("--pools", type=int, default=0, help="at most this many test pools per test set (0: all)")
    p.add_argument("--also", action="append", default=[], metavar="LABEL=DIR",
                   help="picks: another tuned folder to score as its own row")
    p.add_argument("--rows", nargs="+", default=list(SEARCH_ROWS), choices=list(SEARCH_ROWS),
                   help="search rows to run (default: all)")
    args = p.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    {"data": stage_data, "train": stage_train, "picks": stage_picks, "search": stage_search,
     "report": stage_report}[args.stage](args)


if __name__ == "__main__":
    main()
