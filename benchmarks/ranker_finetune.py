"""LM-Searcher's tuned ranker, measured: does fine-tuning on other datasets' trajectories make SmolLM2 pick better?

The cross-domain protocol of the paper, on what this machine can run:

* ``data``: finished runs to learn from and to test on, each a real search through ``Workspace.search``.
  Training: NAS-Bench-201 on CIFAR-10 and CIFAR-100 (random, REA, local search and the learned-ranker
  lmsearcher, several seeds) and the ``examples/digits_mlp.yaml`` space (real MLP training on digits).
  Testing: random search on NAS-Bench-201 ImageNet16-120 (a dataset it never trained on), on the
  MobileNetV3-like ``mbv3`` space trained one epoch on digits (degenerate: every network near chance), and on
  the digits-MLP space with new seeds (the unseen-space test, for the model below that never saw it). Samples
  are exported in the compact format (``collm-nas export-trajectories``'s default).
* ``train``: ``collm-nas finetune`` on the training samples (timed: wall and CPU). With ``--leave-out digits``:
  the same fine-tune on the NAS-Bench-201 samples only (``WORK/tuned-nb201``), leaving one space out.
* ``picks``: on the held-out pools of the test runs, the share of pools where a ranker picks the truly best
  code and the mean true rank of its pick (1 = best of 10): random picking, the untuned model (with the
  prompt the search gives it, and with the compact one), the tuned models, and the learned GP ranker fitted
  on the same history. The LLMs answer through the real ranker path (llama.cpp server, grammar). LLM rows
  already measured on the same pools are kept (``--fresh`` measures again); ``--sets`` picks test sets.
* ``search``: full searches (``lmsearcher``, 100 evaluations, ImageNet16-120): random search, the untuned
  local model and the tuned one, several seeds.
* ``report``: the Markdown tables from what the stages stored.

    python benchmarks/ranker_finetune.py data --work /tmp/rft
    python benchmarks/ranker_finetune.py train --work /tmp/rft --max-samples 330 --epochs 1
    python benchmarks/ranker_finetune.py train --work /tmp/rft --max-samples 330 --epochs 1 --leave-out digits
    python benchmarks/ranker_finetune.py picks --work /tmp/rft
    python benchmarks/ranker_finetune.py search --work /tmp/rft --seeds 3
    python benchmarks/ranker_finetune.py report --work /tmp/rft
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
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
from collm_nas.agents.ranker import LLMRanker  # noqa: E402
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

    def export(name: str, run_ids: list[str], stride: int) -> None:
        count = export_trajectories([ws.run(r) for r in run_ids], work / name, stride=stride)
        _say(f"  {name}: {count} samples from {len(run_ids)} runs")

    if not args.tests_only:
        _say("training runs (NAS-Bench-201 CIFAR-10 / CIFAR-100, digits MLP)")
        nb201 = [run(f"train-{ds}-{strategy}-{seed}", space="nb201", evaluator="table", dataset=ds,
                     strategy=strategy, budget=100, seed=seed)
                 for ds in ("cifar10", "cifar100") for strategy in TRAIN_STRATEGIES for seed in range(args.train_seeds)]
        digits = [run(f"train-digits-{strategy}-{seed}", strategy=strategy, budget=60, seed=seed, **DIGITS)
                  for strategy in ("random", "rea") for seed in range(2)]
        export("train.jsonl", nb201 + digits, args.stride)
    _say(f"test runs ({', '.join(args.sets)})")
    if "imagenet16" in args.sets:
        imagenet = [run(f"test-imagenet16-random-{seed}", space="nb201", evaluator="table", dataset="imagenet16",
                        strategy="random", budget=60, seed=100 + seed) for seed in range(args.test_seeds)]
        export("test-imagenet16.jsonl", imagenet, 2)
    if "mbv3" in args.sets:
        mbv3 = [run("test-mbv3-random-0", strategy="random", budget=args.mbv3_budget, seed=100, **MBV3)]
        export("test-mbv3.jsonl", mbv3, 1)
    if "digits" in args.sets:
        # The leave-one-space-out test: random searches of the digits-MLP space with seeds no training run used.
        digits_test = [run(f"test-digits-random-{seed}", strategy="random", budget=60, seed=100 + seed, **DIGITS)
                       for seed in range(args.digits_test_seeds)]
        export("test-digits.jsonl", digits_test, 2)


# ===================================================================== train
def _without_space(source: Path, target: Path, space_suffix: str) -> int:
    """Copy the samples of ``source`` whose space does not end with ``space_suffix``; returns how many."""
    kept = 0
    with source.open(encoding="utf-8") as f, target.open("w", encoding="utf-8") as out:
        for line in f:
            if line.strip() and not json.loads(line)["meta"]["space"].endswith(space_suffix):
                out.write(line)
                kept += 1
    return kept


def stage_train(args: argparse.Namespace) -> None:
    """The mixed fine-tune (``tuned``), or with ``--leave-out digits`` one that never saw the digits-MLP space."""
    data, out, result = args.work / "train.jsonl", args.work / "tuned", args.work / "train-result.json"
    if args.leave_out == "digits":
        data, out = args.work / "train-nb201.jsonl", args.work / "tuned-nb201"
        result = args.work / "train-nb201-result.json"
        kept = _without_space(args.work / "train.jsonl", data, "digits_mlp.yaml")
        _say(f"  {data.name}: {kept} samples (the digits-MLP space's left out)")
    command = [sys.executable, "-m", "collm_nas.cli", "finetune", "--data", str(data),
               "--out", str(out), "--epochs", str(args.epochs), "--max-samples", str(args.max_samples),
               "--seed", "0", "--device", "cpu", "--lr", str(args.lr), "--no-progress"]
    _say(" ".join(command))
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT)
    seconds = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"finetune failed with exit code {done.returncode}")
    manifest = json.loads((out / "ranker.json").read_text())
    cpu = usage.ru_utime + usage.ru_stime  # wall time depends on the machine's other load; CPU time much less
    result.write_text(json.dumps({"wall_s": seconds, "cpu_s": cpu, "manifest": manifest}, indent=1))
    _say(f"fine-tune took {seconds:.0f}s wall, {cpu:.0f}s CPU")


# ===================================================================== picks
# Each test set: its runs (by prefix), the export stride, whether pools cut short at a run's end count, and the
# tuned models scored on it (row label, folder: "mixed" = --model, "nb201" = --model-nb201).
TEST_SETS = {
    "imagenet16": {"label": "NAS-Bench-201 ImageNet16-120 (unseen dataset)", "prefix": "test-imagenet16-random-",
                   "stride": 2, "full_only": False,
                   "tuned": [("tuned SmolLM2 (compact prompt, temperature 0)", "mixed"),
                             ("tuned on NAS-Bench-201 only (the digits-MLP samples left out)", "nb201")]},
    "mbv3": {"label": "mbv3 on digits (unseen space)", "prefix": "test-mbv3-random-", "stride": 1,
             "full_only": False, "tuned": [("tuned SmolLM2 (compact prompt, temperature 0)", "mixed")]},
    "digits": {"label": "digits-MLP space, new seeds (left out of the NAS-Bench-201-only fine-tune)",
               "prefix": "test-digits-random-", "stride": 2, "full_only": True,
               "tuned": [("tuned on NAS-Bench-201 only: never saw this space", "nb201"),
                         ("tuned on NAS-Bench-201 + digits-MLP runs: saw this space (other runs)", "mixed")]},
}


def _pools(ws: Workspace, test_set: dict[str, Any], limit: int) -> list[dict[str, Any]]:
    """Every test pool with its run, step, space and history: the same pools export-trajectories wrote."""
    from collm_nas.engine import resolve_space
    from collm_nas.trajectories import run_samples

    pools = []
    for info in sorted(ws.runs(), key=lambda i: i.run_id):
        if not info.run_id.startswith(test_set["prefix"]):
            continue
        run = ws.run(info.run_id)
        trials = [t for t in run.trials() if t.ok]
        for sample in run_samples(run, stride=test_set["stride"]):
            if test_set["full_only"] and len(sample["pool"]) < 10:
                continue  # a pool cut short by the run's end
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


def _spread(items: list[dict[str, Any]]) -> dict[str, float]:
    """How much the test pools separate: mean pool size, pools with one best, the best's lead over the median."""
    unique = sum(sum(1 for c in it["values"] if _rank_of(it, c) == 1) == 1 for it in items)
    leads = [abs(max(it["values"].values()) - statistics.median(it["values"].values())) if it["mode"] == "max"
             else abs(min(it["values"].values()) - statistics.median(it["values"].values())) for it in items]
    gaps = []
    for it in items:
        ordered = sorted(it["values"].values(), reverse=it["mode"] == "max")
        gaps.append(abs(ordered[0] - ordered[1]))
    return {"mean_size": statistics.mean(len(it["values"]) for it in items), "unique_best": unique / len(items),
            "lead_over_median": statistics.median(leads), "gap_to_second": statistics.median(gaps)}


def _llm_picks(items: list[dict[str, Any]], options: dict[str, Any], style: str | None, scoring: str = "pick",
               orders: int | None = None) -> dict[str, Any]:
    from collm_nas.llm.session import open_llm

    picks, seconds, failed, first, notes = [], [], 0, 0, set()
    with open_llm("local", options, roles=("ranker",)) as roles:
        if style is not None:
            roles.ranker_style = style
        ranker, chat = LLMRanker.for_roles(roles, scoring=scoring, orders=orders), roles.chat("ranker")
        for it in items:
            started = time.perf_counter()
            outcome = ranker.pick(chat, it["space"], it["trials"], it["pool"], mode=it["mode"], max_redraws=0,
                                  metric=it["metric"])
            seconds.append(time.perf_counter() - started)
            failed += outcome.code is None
            first += outcome.code is not None and outcome.code == it["pool"][0]
            if outcome.note:
                notes.add(outcome.note)
            picks.append(outcome.code)
    if notes:
        _say(f"  degraded: {'; '.join(sorted(notes))}")
    return {"picks": picks, "seconds": statistics.mean(seconds), "failed": failed, "first_place": first / len(items)}


def _learned_picks(items: list[dict[str, Any]]) -> list[str]:
    from collm_nas.agents.surrogate import LearnedRanker

    picks = []
    for it in items:
        ranker = LearnedRanker(it["space"], mode=it["mode"], acquisition="ei", seed=0)
        ranker.fit([t.ncode for t in it["trials"]], [t.value for t in it["trials"]])
        picks.append(ranker.rank(it["pool"])[0])
    return picks


def stage_picks(args: argparse.Namespace) -> None:
    """Score every ranker on each test set's pools. LLM rows already stored for the same pools are kept
    (delete WORK/picks-result.json, or pass --fresh, to measure them again)."""
    ws = Workspace(args.work / "runs", table_path=args.table)
    models = {"mixed": Path(args.model or args.work / "tuned"), "nb201": Path(args.model_nb201 or args.work / "tuned-nb201")}
    store = args.work / "picks-result.json"
    results: dict[str, Any] = json.loads(store.read_text()) if store.is_file() and not args.fresh else {}
    for name in args.sets:
        test_set = TEST_SETS[name]
        items = _pools(ws, test_set, args.pools)
        if not items:
            _say(f"{name}: no test runs (run the data stage)")
            continue
        kept = results.get(name, {})
        rows = dict(kept.get("rows", {})) if kept.get("pools") == len(items) else {}
        hit, rank = _random_figures(items)
        rows["random pick"] = {"accuracy": hit, "mean_rank": rank}
        rows["learned GP ranker (EI)"] = _score(items, _learned_picks(items))
        models_rows = [("untuned SmolLM2, full prompt (as searches ask it)", {}, None),
                       ("untuned SmolLM2, compact prompt, temperature 0", {"ranker.temperature": 0.0}, "compact")]
        for row, which in test_set["tuned"]:
            if (models[which] / "ranker.json").is_file():
                models_rows.append((row, {"model": str(models[which])}, None))
            else:
                _say(f"{name}: {row}: no model in {models[which]} yet (the train stage writes it); row left out")
        for extra in args.also:
            row_label, _, folder = extra.partition("=")
            models_rows.append((row_label, {"model": folder}, None))
        llm_rows = []
        for row, options, style in models_rows:
            if "pick" in args.scorings:
                llm_rows.append((row, options, style, "pick"))
            if "logprob" in args.scorings:
                llm_rows.append((f"{row}; logprob scoring, {args.orders} orders", options, style, "logprob"))
        results[name] = {"label": test_set["label"], "pools": len(items), "spread": _spread(items), "rows": rows}
        for row, options, style, scoring in llm_rows:
            if row in rows:
                continue
            _say(f"{name}: {row} on {len(items)} pools ...")
            got = _llm_picks(items, options, style, scoring, args.orders)
            rows[row] = {**_score(items, got["picks"]), "s_per_pick": got["seconds"], "failed": got["failed"],
                         "first_place": got["first_place"], "picks": got["picks"]}
            store.write_text(json.dumps(results, indent=1))
        store.write_text(json.dumps(results, indent=1))
    print(_picks_table(results))


def _score(items: list[dict[str, Any]], picks: list[str | None]) -> dict[str, float]:
    ranks = [_rank_of(it, code) for it, code in zip(items, picks)]
    return {"accuracy": sum(r == 1 for r in ranks) / len(ranks), "mean_rank": statistics.mean(ranks)}


def _picks_table(results: dict[str, Any]) -> str:
    lines = []
    for name, res in results.items():
        spread = res.get("spread")
        about = (f" (mean size {spread['mean_size']:.1f}; one truly best code in {spread['unique_best']:.0%} of them; "
                 f"median lead of the best over the pool's median {spread['lead_over_median']:.2f}, "
                 f"over the second {spread['gap_to_second']:.2f})") if spread else ""
        lines += [f"\n{res['label']}: {res['pools']} held-out pools{about}\n",
                  "| ranker | picks the truly best | mean true rank of the pick (1-10) | s / pick | picks the first "
                  "shown |", "|---|---|---|---|---|"]
        for row, fig in res["rows"].items():
            secs = f"{fig['s_per_pick']:.2f}" if "s_per_pick" in fig else "-"
            first = f"{fig['first_place']:.0%}" if "first_place" in fig else "-"
            lines.append(f"| {row} | {fig['accuracy']:.1%} | {fig['mean_rank']:.2f} | {secs} | {first} |")
    return "\n".join(lines)


# ==================================================================== search
# LM-Searcher's own pools (the protocol these rows were measured with; the default is the GP's best five).
SEARCH_ROWS = {"random": {"strategy": "random", "llm": "none"},
               "untuned": {"strategy": "lmsearcher", "llm": "local", "ranker_pool": "subspace"},
               "tuned": {"strategy": "lmsearcher", "llm": "local", "ranker_pool": "subspace", "tuned": True}}


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
    for name, label in (("train-result.json", "fine-tune (NAS-Bench-201 + digits-MLP samples)"),
                        ("train-nb201-result.json", "fine-tune (NAS-Bench-201 samples only)")):
        train = args.work / name
        if not train.is_file():
            continue
        t = json.loads(train.read_text())
        m = t["manifest"]
        cpu = f", {t['cpu_s']:.0f}s CPU" if "cpu_s" in t else ""
        _say(f"{label}: {m['samples']['train']} training samples ({m['samples']['given']} given), "
             f"{m['steps']} steps, {m['train_seconds']:.0f}s training ({t['wall_s']:.0f}s wall with loading and "
             f"export{cpu}), final batch loss {m['final_loss']:.3f}")
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
    p.add_argument("--leave-out", choices=["digits"], default=None,
                   help="train: fine-tune on the NAS-Bench-201 samples only (WORK/tuned-nb201), for the unseen-space test")
    p.add_argument("--model", type=Path, default=None, help="the tuned model folder (default: WORK/tuned)")
    p.add_argument("--model-nb201", type=Path, default=None,
                   help="the model tuned without the digits-MLP samples (default: WORK/tuned-nb201)")
    p.add_argument("--digits-test-seeds", type=int, default=5, help="digits-MLP test runs; default 5")
    p.add_argument("--sets", nargs="+", default=list(TEST_SETS), choices=list(TEST_SETS),
                   help="data and picks: test sets to build and score (default: all)")
    p.add_argument("--fresh", action="store_true", help="picks: measure every row again")
    p.add_argument("--scorings", nargs="+", default=["pick"], choices=["pick", "logprob"],
                   help="picks: how the LLM rows choose: pick (the model writes a code; default) and/or logprob "
                        "(each candidate's letter probability, averaged over --orders orders)")
    p.add_argument("--orders", type=int, default=5, help="picks, logprob scoring: orders per pool; default 5")
    p.add_argument("--tests-only", action="store_true",
                   help="data: only the test runs of --sets (no training runs, no train.jsonl)")
    p.add_argument("--seeds", type=int, default=3, help="search seeds per row; default 3")
    p.add_argument("--pools", type=int, default=0, help="at most this many test pools per test set (0: all)")
    p.add_argument("--also", action="append", default=[], metavar="LABEL=MODEL",
                   help="picks: another model to score as its own row: a tuned folder or a GGUF file (e.g. "
                        "Qwen2.5-Coder-1.5B)")
    p.add_argument("--rows", nargs="+", default=list(SEARCH_ROWS), choices=list(SEARCH_ROWS),
                   help="search rows to run (default: all)")
    args = p.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    {"data": stage_data, "train": stage_train, "picks": stage_picks, "search": stage_search,
     "report": stage_report}[args.stage](args)


if __name__ == "__main__":
    main()
