"""The ``collm-nas`` command line."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from collm_nas.core import UserError
from collm_nas.faces import add_spec_arguments, run_task, spec_overrides

EXIT_USAGE = 2
EXIT_LLM_MISSING = 3  # --require-llm: the run ended, but its LLM answered fewer rounds than required
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad usage in one line, exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs-dir", help="folder of the run database (default: $COLLM_NAS_RUNS_DIR or ./runs)")
    p.add_argument("--store", metavar="URL",
                   help="where runs are stored: postgres://USER@HOST:PORT/DB (also postgresql://; shared by a team) "
                        "or a SQLite file (default: $COLLM_NAS_STORE, else collm-nas.db in the runs folder)")


def _driving(p: argparse.ArgumentParser) -> None:
    """Flags of every command that runs a search on (search, resume, approve, fork)."""
    p.add_argument("--require-llm", choices=["off", "some", "all"],
                   help="for scripts: exit with code 3 when the run's LLM answered no round meant for it (some) or "
                        "fewer rounds than were meant for it (all); the run itself goes on with its fallback and "
                        "is kept (default: $COLLM_NAS_REQUIRE_LLM or off: the last line says so)")


def _table_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--table", help="NAS-Bench-201 results table nb201.csv.gz (default: $COLLM_NAS_NB201_TABLE)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="collm-nas", description="LLM-guided neural architecture search on a resumable LangGraph loop.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    s = sub.add_parser("search", help="start a new search",
                       description="Start a new search. Every flag below but the last group sets a field of the "
                                   "run spec (collm_nas.core.RunConfig), stored with the run.")
    add_spec_arguments(s)
    s.add_argument("--run-id", help="name of the new run (default: generated)")
    s.add_argument("--data-dir", help="folder holding CIFAR / Fashion-MNIST / torchvision / image-folder data for "
                                      "--evaluator train, supernet or proxy (default: $COLLM_NAS_DATA_DIR)")
    s.add_argument("--approve", action="store_true",
                   help="answer each approval pause here (approve / edit / reject); alone it means --approval "
                        "every-round; without it a paused search exits and 'collm-nas approve RUN_ID' answers later")
    s.add_argument("--json", action="store_true", help="print one JSON object at the end")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    _driving(s)
    _table_flag(s)
    _common(s)

    r = sub.add_parser("resume", help="continue an interrupted run to its budget")
    r.add_argument("run_id")
    r.add_argument("--approve", action="store_true", help="answer approval pauses here")
    r.add_argument("--json", action="store_true")
    r.add_argument("--no-progress", action="store_true")
    _driving(r)
    _table_flag(r)
    _common(r)

    a = sub.add_parser("approve", help="show or answer a run paused for approval, then let it go on")
    a.add_argument("run_id")
    a.add_argument("--decision", choices=["approve", "edit", "reject"],
                   help="the answer (without it: show the pause and exit)")
    a.add_argument("--drop", nargs="+", default=[], metavar="CODE", help="edit: codes to take out of the batch")
    a.add_argument("--add", nargs="+", default=[], metavar="CODE", help="edit: codes to add (checked first)")
    a.add_argument("--comment", help="reject: why, for the Navigator's next round")
    a.add_argument("--approve", action="store_true", help="answer later pauses here too")
    a.add_argument("--json", action="store_true")
    a.add_argument("--no-progress", action="store_true")
    _driving(a)
    _table_flag(a)
    _common(a)

    hi = sub.add_parser("history", help="list a run's checkpoints by round (to fork from)")
    hi.add_argument("run_id")
    hi.add_argument("--json", action="store_true")
    _common(hi)

    fk = sub.add_parser("fork", help="start a new run from a run's state at the end of a round")
    fk.add_argument("run_id")
    fk.add_argument("--round", type=int, required=True, help="the completed round to start from ('history' lists them)")
    fk.add_argument("--run-id", dest="new_run_id", help="id of the new run (default: derived from the parent's)")
    fk.add_argument("--strategy", help="another strategy from that point on (default: the parent's)")
    fk.add_argument("--budget", type=int, help="another budget (default: the parent's)")
    fk.add_argument("--no-start", action="store_true", help="create the fork and leave it resumable")
    fk.add_argument("--approve", action="store_true", help="answer approval pauses here")
    fk.add_argument("--json", action="store_true")
    fk.add_argument("--no-progress", action="store_true")
    _driving(fk)
    _table_flag(fk)
    _common(fk)

    pr = sub.add_parser("prune", help="delete a run's old checkpoints (each round's last one and the most recent "
                                      "are kept, so history and fork still work)")
    pr.add_argument("run_id")
    pr.add_argument("--keep", type=int, help="most recent checkpoints to keep besides each round's last "
                                             "(default: $COLLM_NAS_KEEP_CHECKPOINTS or 20)")
    pr.add_argument("--json", action="store_true")
    _common(pr)

    ls = sub.add_parser("runs", help="list runs with their status")
    ls.add_argument("--json", action="store_true")
    _common(ls)

    sh = sub.add_parser("show", help="print a run's trials")
    sh.add_argument("run_id")
    sh.add_argument("--top", type=int, help="only the K best trials by the searched metric")
    sh.add_argument("--format", choices=["table", "json", "csv"], default="table")
    sh.add_argument("--hv-ref", metavar="V1,V2[,V3]",
                    help="several objectives: the hypervolume's reference point, one value per objective in its "
                         "own units (default: the run's --hv-ref, else each objective's worst value moved a "
                         "tenth of its range further)")
    _common(sh)

    pl = sub.add_parser("plot", help="plot best-so-far accuracy against evaluations for runs (runs with several "
                                     "objectives: their trials and Pareto fronts)")
    pl.add_argument("run_ids", nargs="+", metavar="RUN_ID")
    pl.add_argument("--out", required=True, help="PNG file to write")
    pl.add_argument("--metric", choices=["reported", "searched"], default="reported",
                    help="which metric of the best-so-far architecture to draw (default: reported)")
    _common(pl)
    _table_flag(pl)

    ex = sub.add_parser("export-trajectories", help="write LM-Searcher instruction-tuning samples from finished runs")
    ex.add_argument("run_ids", nargs="+", metavar="RUN_ID")
    ex.add_argument("--out", required=True, help="JSON-lines file to write")
    ex.add_argument("--pool-size", type=int, default=10, help="candidates per sample (default 10)")
    ex.add_argument("--format", choices=["compact", "full"], default="compact",
                    help="compact (default): what 'collm-nas finetune' trains on, ~200 tokens a sample, the bare "
                         "code as the answer; full: the untuned ranker's prompt with the space described")
    ex.add_argument("--stride", type=int, default=1, help="one sample every N steps of a run (default 1: every step)")
    _common(ex)

    db = sub.add_parser("dashboard", help="a local web dashboard: watch runs, compare them, answer approval pauses",
                        description="Serve the web dashboard until Ctrl-C (prints its URL). Loopback only unless "
                                    "--host says otherwise; then every request needs the printed token "
                                    "(or $COLLM_NAS_DASHBOARD_TOKEN).")
    db.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    db.add_argument("--port", type=int, default=8731, help="port (default 8731; 0: any free port)")
    _table_flag(db)
    _common(db)

    ft = sub.add_parser("finetune", help="LoRA-tune a local model into a better ranker on finished runs' samples",
                        description="Supervised LoRA fine-tuning of a causal LM on the ranker's own samples (loss on "
                                    "the answer only); writes OUT/ranker.gguf, OUT/adapter and OUT/ranker.json. "
                                    "Search with it: --strategy lmsearcher --llm local --llm-model OUT. Ctrl-C or a "
                                    "kill keeps the last checkpoint: the same command resumes.")
    ft.add_argument("--data", nargs="+", default=[], metavar="FILE.jsonl",
                    help="samples written by export-trajectories")
    ft.add_argument("--runs", nargs="+", default=[], metavar="RUN_ID", help="finished runs to take samples from")
    ft.add_argument("--out", required=True, help="folder for the tuned model (and its checkpoint)")
    ft.add_argument("--base", default="local",
                    help="local (the embedded SmolLM2-135M-Instruct, default), a GGUF file, or a Hugging Face "
                         "model folder")
    ft.add_argument("--epochs", type=int, default=1, help="passes over the training samples (default 1)")
    ft.add_argument("--max-samples", type=int, help="use at most N samples, drawn by --seed (default: all)")
    ft.add_argument("--lora-rank", type=int, default=8, help="LoRA rank (default 8)")
    ft.add_argument("--lr", type=float, default=5e-4, help="peak learning rate (default 5e-4)")
    ft.add_argument("--batch-size", type=int, default=4, help="samples per optimiser step (default 4)")
    ft.add_argument("--holdout", type=float, default=0.1,
                    help="share of the runs held out to score picks after each epoch (default 0.1)")
    ft.add_argument("--seed", type=int, default=0, help="seed of the sample choice, split, order and LoRA init")
    ft.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ft.add_argument("--threads", type=int, help="CPU threads (default: 1 on small machines)")
    ft.add_argument("--save-every", type=int, default=10, help="optimiser steps between checkpoints (default 10)")
    ft.add_argument("--max-steps", type=int, help="stop after N optimiser steps (a quick look)")
    ft.add_argument("--gguf-type", choices=["f16", "q8_0"], default="f16",
                    help="storage of the merged weights in ranker.gguf (default f16: as fast to serve here as "
                         "q8_0 and true to the trained weights; q8_0 is 40%% smaller)")
    ft.add_argument("--no-progress", action="store_true", help="no progress bar")
    _common(ft)

    llm = sub.add_parser("llm", help="the embedded local model (or any GGUF chat model)")
    llm_sub = llm.add_subparsers(dest="llm_command", required=True, metavar="ACTION")
    serve = llm_sub.add_parser("serve", help="serve the local model on an OpenAI-compatible endpoint until Ctrl-C")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, help="port (default: a free one)")
    serve.add_argument("--log", help="server log file (default: a temporary file)")
    serve.add_argument("--model", metavar="FILE.gguf",
                       help="serve this GGUF chat model instead of the embedded SmolLM2-135M (its chat template and "
                            "context length come from the file)")

    d = sub.add_parser("describe", help="describe a search space and its NCode")
    d.add_argument("--space", default="nb201")
    d.add_argument("--constraint", action="append", default=[], metavar="EXPR")

    for name, text in (("encode", "architecture (for nb201 the benchmark string)"), ("decode", "NCode")):
        e = sub.add_parser(name, help=f"turn an {text} into its other form")
        e.add_argument("value", help=text)
        e.add_argument("--space", default="nb201")

    c = sub.add_parser("check", help="check NCodes with the validity checker")
    c.add_argument("ncodes", nargs="+")
    c.add_argument("--space", default="nb201")
    c.add_argument("--dataset", default="cifar10", help="dataset whose resource figures constraints use")
    c.add_argument("--constraint", action="append", default=[], metavar="EXPR")
    c.add_argument("--json", action="store_true")
    _table_flag(c)
    return parser


# ------------------------------------------------------------------ commands
def _workspace(args: argparse.Namespace):
    from collm_nas.api import Workspace

    return Workspace(getattr(args, "runs_dir", None), table_path=getattr(args, "table", None),
                     store=getattr(args, "store", None))


def _progress(args: argparse.Namespace):
    from collm_nas.progress import ProgressBar
    from collm_nas.core.settings import load_settings

    setting = load_settings().progress
    enabled = None if setting == "auto" else setting == "always"
    if args.no_progress or args.json:
        enabled = False
    return ProgressBar(enabled=enabled)


def _print_result(result, as_json: bool) -> None:
    data = result.to_dict()
    if as_json:
        print(json.dumps(data))
        return
    best = data["best"]
    print(f"run {data['run_id']}: {data['status']} ({data['stop_reason']}), "
          f"{data['evaluations']}/{data['budget']} evaluations in {data['seconds']:.1f}s")
    print(f"note: {data['metric_note']}")
    if best is None:
        print("no successful trial")
        return
    print(f"best NCode     {best['ncode']}  (found at evaluation {best['found_at']})")
    print(f"architecture   {best['arch']}")
    print(f"searched       {data['searched_metric']} = {best['searched']:.4f}")
    print(f"reported       {data['reported_metric']} = {best['reported']:.4f}")
    extras = {k: v for k, v in best["metrics"].items() if k not in (data["searched_metric"], data["reported_metric"])}
    if extras:
        print("other          " + ", ".join(f"{k}={v:.4g}" for k, v in extras.items()))
    if "pareto" in data:
        print(_front_text(data))


def _front_text(data: dict[str, Any], numbers: dict[str, int] | None = None) -> str:
    """A run's Pareto front: its size and hypervolume (with the reference point), then its trials."""
    names = [spec.rpartition(":")[0] for spec in data["objectives"]]
    reference = data["hv_reference"]
    where = (", ".join(f"{n}={v:.4g}" for n, v in zip(names, reference)) if reference else "none")
    lines = [f"Pareto front   {len(data['pareto'])} trials no other dominates ({' vs '.join(data['objectives'])}); "
             f"hypervolume {data['hypervolume']:.6g} from reference {where} ({data['hv_reference_rule']})"]
    ranked = sorted(data["pareto"], key=lambda t: tuple(-_num(t["metrics"].get(n)) for n in names[:1]))
    rows = [{**({"eval": numbers[t["ncode"]]} if numbers else {}), "ncode": t["ncode"],
             **{n: t["metrics"].get(n) for n in names}, "arch": t["arch"]} for t in ranked]
    lines.append(_format_table(rows, list(rows[0])) if rows else "  (no successful trial yet)")
    return "\n".join(lines)


def _num(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) else float("-inf")


def _run_with_progress(args: argparse.Namespace, start) -> int:
    bar = _progress(args)
    run_id_seen: list[str] = []

    def on_event(event: dict[str, Any]) -> None:
        if event.get("event") == "warning":
            bar.close()
            print(f"collm-nas: warning: {event['message']}", file=sys.stderr)
            return
        if event.get("event") == "llm":
            if not args.json:
                roles = "; ".join(f"{role}: {info.get('model')} at {info.get('base_url') or 'OpenAI'} "
                                  f"({info.get('mode')})" for role, info in event["roles"].items())
                print(f"collm-nas: LLM {event['source']}: {roles}", file=sys.stderr)
                for server in event.get("servers") or ():
                    print(f"collm-nas: local model server pid {server['pid']} ({server['model']}), log "
                          f"{server['log']}", file=sys.stderr)
            return
        if not run_id_seen and event.get("run_id"):
            run_id_seen.append(event["run_id"])
            if not args.json:
                print(f"collm-nas: run {event['run_id']} (if stopped, continue it with "
                      f"'collm-nas resume {event['run_id']}')", file=sys.stderr)
        bar(event)

    try:
        result = start(on_event)
    except KeyboardInterrupt:
        bar.close()
        rid = run_id_seen[0] if run_id_seen else getattr(args, "run_id", None)
        hint = f"; continue with: collm-nas resume {rid}" if rid else ""
        print(f"collm-nas: interrupted{hint}", file=sys.stderr)
        return EXIT_INTERRUPTED
    bar.close()
    while result.status == AWAITING_STATUS:
        if not getattr(args, "approve", False):
            _print_pause_hint(result.run_id)
            break
        try:
            answered = _answer_interactively(args, result.run_id, on_event)
        except KeyboardInterrupt:
            bar.close()
            print(f"collm-nas: interrupted; the run stays paused: collm-nas approve {result.run_id}",
                  file=sys.stderr)
            return EXIT_INTERRUPTED
        if answered is None:
            _print_pause_hint(result.run_id)
            break
        result = answered
        bar.close()
    _print_result(result, args.json)
    return _llm_verdict(args, result)


def _llm_verdict(args: argparse.Namespace, result) -> int:
    """The last line of a run whose LLM answered fewer rounds than meant for it; exit 3 under --require-llm."""
    line = result.degraded
    if line is None:
        return 0
    if not args.json:
        print(line)
    from collm_nas.core.settings import load_settings

    required = getattr(args, "require_llm", None) or load_settings().require_llm
    summary = result.llm or {}
    if required == "all" or (required == "some" and summary.get("never_answered")):
        print(f"collm-nas: error: --require-llm {required}: {line.removeprefix('DEGRADED: ')} (the run is kept: "
              f"'collm-nas show {result.run_id}')", file=sys.stderr)
        return EXIT_LLM_MISSING
    return 0


AWAITING_STATUS = "awaiting approval"


def _print_pause_hint(run_id: str) -> None:
    print(f"collm-nas: run {run_id} is paused for approval; see it with 'collm-nas approve {run_id}', answer with "
          f"'collm-nas approve {run_id} --decision approve|edit|reject'", file=sys.stderr)


def _pause_text(pause: dict[str, Any]) -> str:
    """The batch waiting for approval, for a terminal."""
    lines = [f"run {pause['run_id']}, round {pause['round']}: waiting for approval ({pause['reason']})"]
    strategy = pause.get("strategy") or {}
    if strategy.get("summary"):
        lines.append(f"strategy: {strategy['summary']}")
    for pattern in strategy.get("patterns") or []:
        lines.append(f"  pattern: {pattern}")
    lines.append(f"  {'#':>2}  {'ncode':<8} {'valid':<5} {'est. s':>8}  architecture")
    for i, c in enumerate(pause["candidates"], 1):
        cost = "?" if c["estimated_cost_s"] is None else f"{c['estimated_cost_s']:.3g}"
        valid = "yes" if c["valid"] else "NO"
        lines.append(f"  {i:>2}  {c['ncode']:<8} {valid:<5} {cost:>8}  {c['arch'] or '; '.join(c['problems'])}")
    total = pause.get("estimated_cost_s")
    lines.append(f"budget left {pause['budget_left']} of {pause['budget']}; estimated cost of the batch: "
                 f"{'unknown' if total is None else f'{total:.3g} s'} ({pause['cost_source']})")
    if pause.get("error"):
        lines.append(f"last answer refused: {pause['error']}")
    return "\n".join(lines)


def _ask(prompt: str) -> str | None:
    print(prompt, end="", file=sys.stderr, flush=True)
    line = sys.stdin.readline()
    return None if not line else line.strip()


def _answer_interactively(args: argparse.Namespace, run_id: str, on_event):
    """Show the pause, read approve / edit / reject from stdin, answer; None when stdin ends."""
    ws = _workspace(args)
    pause = ws.pending_approval(run_id)
    print(_pause_text(pause), file=sys.stderr)
    codes = [c["ncode"] for c in pause["candidates"]]
    while True:
        choice = _ask("[a]pprove, [e]dit, [r]eject? ")
        if choice is None:
            return None
        choice = choice.lower()
        kw: dict[str, Any] = {}
        if choice in ("a", "approve", "y", "yes"):
            decision = "approve"
        elif choice in ("e", "edit"):
            decision = "edit"
            drop = _ask("drop (numbers or codes, blank for none): ")
            add = _ask("add (codes, blank for none): ")
            if drop is None or add is None:
                return None
            kw["drop"] = [codes[int(x) - 1] if x.isdigit() and 0 < int(x) <= len(codes) else x
                          for x in drop.replace(",", " ").split()]
            kw["add"] = add.replace(",", " ").split()
        elif choice in ("r", "reject"):
            decision = "reject"
            comment = _ask("comment for the Navigator: ")
            if comment is None:
                return None
            kw["comment"] = comment
        else:
            print("collm-nas: answer a, e or r", file=sys.stderr)
            continue
        try:
            return ws.approve(run_id, decision, on_progress=on_event, **kw)
        except UserError as e:  # a refused edit: the pause stays open, ask again
            print(f"collm-nas: {e}", file=sys.stderr)


def cmd_search(args: argparse.Namespace) -> int:
    from collm_nas.api import spec_from
    from collm_nas.engine.prepare import make_run_id

    ws = _workspace(args)
    fields = spec_overrides(args)
    if args.data_dir:
        fields.setdefault("train_options", {})["data_dir"] = args.data_dir
    fields["approval"] = _approval_mode(args, fields.get("approval"))
    spec = spec_from(**fields)
    args.run_id = args.run_id or make_run_id(spec)
    return _run_with_progress(args, lambda on_event: ws.search(spec, run_id=args.run_id, on_progress=on_event))


def _approval_mode(args: argparse.Namespace, given: str | None) -> str:
    if given is None:
        return "every_round" if args.approve else "never"
    given = given.replace("-", "_")
    if given == "never" and args.approve:
        raise UserError("--approve answers approval pauses, but --approval never asks for none; drop one of them")
    return given


def cmd_prune(args: argparse.Namespace) -> int:
    report = _workspace(args).prune(args.run_id, args.keep)
    if args.json:
        print(json.dumps({"run_id": report.run_id, "kept": report.kept, "deleted": report.deleted,
                          "rounds_kept": report.rounds_kept, **report.details}))
    else:
        print(f"run {report.run_id}: deleted {report.deleted} checkpoints, kept {report.kept} "
              f"(the last of {report.rounds_kept} rounds and the most recent)")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    ws = _workspace(args)
    if ws.run(args.run_id).status == AWAITING_STATUS:  # paused at the gate: show it (and answer with --approve)
        return _run_with_progress(args, lambda on_event: ws.result(args.run_id))
    return _run_with_progress(args, lambda on_event: ws.resume(args.run_id, on_progress=on_event))


def cmd_history(args: argparse.Namespace) -> int:
    points = _workspace(args).history(args.run_id)
    if args.json:
        print(json.dumps(points))
        return 0
    print(f"{'round':>5}  {'evaluated':>9}  {'best':>10}  {'next':<10}  checkpoint")
    for p in points:
        best = "-" if p["best_value"] is None else f"{p['best_value']:.4f}"
        print(f"{p['round']:>5}  {p['evaluated']:>9}  {best:>10}  {','.join(p['next']) or 'end':<10}  "
              f"{p['checkpoint_id']}")
    return 0


def cmd_fork(args: argparse.Namespace) -> int:
    ws = _workspace(args)
    return _run_with_progress(args, lambda on_event: ws.fork(
        args.run_id, args.round, new_run_id=args.new_run_id, strategy=args.strategy, budget=args.budget,
        start=not args.no_start, on_progress=on_event))


def cmd_approve(args: argparse.Namespace) -> int:
    ws = _workspace(args)
    pause = ws.pending_approval(args.run_id)
    if pause is None:
        raise UserError(f"run '{args.run_id}' is not waiting for approval (status: "
                        f"{ws.run(args.run_id).info.display_status})")
    if args.decision is None:
        if args.approve:
            return _run_with_progress(args, lambda on_event: ws.result(args.run_id))
        print(json.dumps(pause) if args.json else _pause_text(pause))
        return 0
    if args.decision != "edit" and (args.drop or args.add):
        raise UserError("--drop and --add go with --decision edit")
    return _run_with_progress(args, lambda on_event: ws.approve(
        args.run_id, args.decision, drop=args.drop, add=args.add, comment=args.comment, on_progress=on_event))


def cmd_runs(args: argparse.Namespace) -> int:
    ws = _workspace(args)
    runs = ws.runs()
    rows = []
    for info in runs:
        cfg = info.config
        rows.append({
            "run_id": info.run_id,
            "status": info.display_status,
            "stop_reason": info.stop_reason,
            "space": cfg.get("space"),
            "dataset": run_task(cfg),
            "strategy": cfg.get("strategy"),
            "evaluations": info.n_trials,
            "budget": cfg.get("budget"),
            "best_ncode": info.best_ncode,
            "best_value": info.best_value,
            "created": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.created_at)),
        })
    if args.json:
        print(json.dumps(rows))
        return 0
    if not rows:
        print(f"no runs in {ws.location}")
        return 0
    print(_format_table(rows, ["run_id", "status", "space", "dataset", "strategy", "evaluations", "budget",
                               "best_ncode", "best_value", "created"]))
    return 0


def _hv_reference(text: str | None) -> list[float] | None:
    """``--hv-ref 90,2.5`` as numbers (None: not given)."""
    if text is None:
        return None
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"--hv-ref '{text}' must be numbers separated by commas, one per objective, "
                        "e.g. --hv-ref 85,4.5") from None


def cmd_show(args: argparse.Namespace) -> int:
    ws = _workspace(args)
    run = ws.run(args.run_id)
    if args.top is not None and args.top < 1:
        raise UserError(f"--top must be at least 1, got {args.top}")
    result = ws.result(args.run_id)
    number = {t.ncode: i + 1 for i, t in enumerate(run.trials())}
    front = run.pareto(_hv_reference(args.hv_ref))
    from collm_nas.api import front_dict

    front_data = front_dict(front) if front is not None else None
    rows = []
    for t in run.trials(top=args.top):
        rows.append({
            "eval": number[t.ncode], "round": t.round, "ncode": t.ncode, "arch": t.arch, "status": t.status,
            result.searched_metric: t.metrics.get(result.searched_metric),
            **({result.reported_metric: t.metrics.get(result.reported_metric)}
               if result.reported_metric != result.searched_metric else {}),
            **{k: v for k, v in t.metrics.items() if k not in (result.searched_metric, result.reported_metric)},
            **({"train_s": t.cost["train_s"]} if "train_s" in t.cost else {}),
            "error": t.error,
        })
    if args.format == "json":
        print(json.dumps({"run_id": run.run_id, "status": run.status, "config": run.info.config,
                          "metric_note": result.metric_note, "llm": run.llm_summary(),
                          **(front_data or {}), "trials": rows}))
    elif args.format == "csv":
        buf = io.StringIO()
        fields = list(dict.fromkeys(k for row in rows for k in row)) or ["eval"]
        writer = csv.DictWriter(buf, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
        sys.stdout.write(buf.getvalue())
    else:
        print(f"run {run.run_id}: {run.status}, {result.evaluations}/{result.budget} evaluations; {result.metric_note}")
        llm = run.llm_summary()
        if llm is not None:
            print(_llm_text(llm))
            if result.degraded:
                print(result.degraded)
        if front_data is not None:
            print(_front_text(front_data, number))
            print("all trials:" if args.top is None else f"the {args.top} best by {result.searched_metric}:")
        cols = list(dict.fromkeys(k for row in rows for k in row if k != "error"))
        print(_format_table(rows, cols) if rows else "no trials yet")
        failed = [row for row in rows if row["error"]]
        if failed:
            print(f"failed trials ({len(failed)}):")
            for row in failed:
                print(f"  eval {row['eval']} {row['ncode']}: {row['error']}")
    return 0


def _times(n: int) -> str:
    return "once" if n == 1 else f"{n} times"


def _llm_text(s: dict[str, Any]) -> str:
    """The LLM figures of a run, a few lines."""
    modes = ", ".join(f"{role} {'/'.join(m)}" for role, m in s["modes"].items()) or "-"
    lines = [
        f"LLM: {s['llm_rounds']}/{s['rounds']} rounds used the LLM ({s['fallback_rounds']} fell back{s['planned_note']}); "
        f"decoding: {modes}",
        f"  proposals {s['proposed']}: illegal {s['illegal']} ({100 * s['illegal_rate']:.1f}%), "
        f"duplicates {s['duplicates']} ({100 * s['duplicate_rate']:.1f}%), accepted {s['accepted']}, "
        f"topped up by the fallback {s['topped_up']}, corrective follow-ups {s['corrections']}"
        + (f", ranked out {s['ranked_out']}" if s.get("ranked_out") else "")
        + (f", the same network as one held {s['same_network']}" if s.get("same_network") else ""),
        f"  calls {s['calls']} ({s['failed_calls']} failed); tokens prompt {s['prompt_tokens']} / completion "
        f"{s['completion_tokens']}; latency {s['latency_s']:.1f}s in all, {s['latency_per_call_s']:.2f}s a call",
    ]
    for role, row in (s.get("by_role") or {}).items():
        one = row["per_call"]
        lines.append(f"  {role}: {row['calls']} calls, a call {one['prompt_tokens']:.0f} prompt / "
                     f"{one['completion_tokens']:.0f} completion tokens, {one['seconds']:.1f}s")
    if s.get("server_restarts") or s.get("server_timeouts") or s.get("server_down"):
        lines.append(f"  local server: restarted {_times(s['server_restarts'])}, {s['server_timeouts']} calls timed out "
                     f"while it still answered" + ("; given up after its restarts" if s.get("server_down") else ""))
        lines += [f"    {message}" for message in s.get("server_events") or ()]
    if s.get("tool_calls") or s.get("tool_rounds"):
        named = ", ".join(f"{name} {n}" for name, n in sorted(s["tool_calls"].items())) or "none"
        lines.append(f"  tool calls {sum(s['tool_calls'].values())} in {s['tool_rounds']} tool rounds ({named}); "
                     f"{s['tool_errors']} answered with an error")
    if s.get("navigator_prompt_tokens"):
        lines.append("  navigator prompt tokens by round: " + ", ".join(
            f"r{r}={n}" for r, n in s["navigator_prompt_tokens"].items()))
    return "\n".join(lines)


def cmd_plot(args: argparse.Namespace) -> int:
    from collm_nas.evaluators import run_label
    from collm_nas.plotting import best_so_far, plot_curves

    ws = _workspace(args)
    runs = [ws.run(run_id) for run_id in args.run_ids]
    fronts = {tuple(run.objectives.specs()) if run.objectives else None for run in runs}
    if len(fronts) > 1:
        raise UserError("plot runs with the same objectives together: " + "; ".join(
            f"{run.run_id} has {', '.join(run.objectives.specs()) if run.objectives else run.searched_metric}"
            for run in runs))
    if runs[0].objectives is not None:
        from collm_nas.plotting import plot_fronts

        out = plot_fronts([(run.run_id, run.trials()) for run in runs], runs[0].objectives, args.out)
        print(f"wrote {out}")
        return 0
    curves: dict[str, dict[str, list[list[float]]]] = {}
    for run_id in args.run_ids:
        run = ws.run(run_id)
        result = ws.result(run_id)
        cfg = run.config
        panel = run_label(cfg.evaluator, cfg.space, cfg.dataset)
        reported = result.reported_metric if args.metric == "reported" else None
        label = cfg.strategy if len(args.run_ids) > 1 else run_id
        curves.setdefault(str(panel), {}).setdefault(label, []).append(
            best_so_far(run.trials(), cfg.mode, reported))
    metric = "reported" if args.metric == "reported" else "searched"
    out = plot_curves(curves, args.out, ylabel=f"{metric} metric of the best so far")
    print(f"wrote {out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from collm_nas.trajectories import export_trajectories

    if args.pool_size < 2:
        raise UserError(f"--pool-size must be at least 2, got {args.pool_size}")
    ws = _workspace(args)
    runs = [ws.run(run_id) for run_id in args.run_ids]
    count = export_trajectories(runs, args.out, pool_size=args.pool_size, style=args.format, stride=args.stride)
    print(f"wrote {count} samples from {len(runs)} run(s) to {args.out}")
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    from collm_nas.dashboard.serve import serve

    return serve(host=args.host, port=args.port, runs_dir=args.runs_dir, store=args.store, table=args.table)


def cmd_finetune(args: argparse.Namespace) -> int:
    import signal

    from collm_nas.finetune.train import FinetuneOptions
    from collm_nas.trajectories import finetune_ranker

    options = FinetuneOptions(epochs=args.epochs, max_samples=args.max_samples, lora_rank=args.lora_rank, lr=args.lr,
                              batch_size=args.batch_size, holdout=args.holdout, seed=args.seed, device=args.device,
                              threads=args.threads, save_every=args.save_every, max_steps=args.max_steps,
                              gguf_type=args.gguf_type)
    options.check()
    runs = [_workspace(args).run(run_id) for run_id in args.runs] if args.runs else []

    def interrupt(signum, frame):  # SIGTERM saves the checkpoint like Ctrl-C
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        result = finetune_ranker(args.out, data=args.data, runs=runs, base=args.base, options=options,
                                 progress=not args.no_progress, log=lambda text: print(text, flush=True))
    finally:
        signal.signal(signal.SIGTERM, previous)
    if result.manifest.get("gguf") is None:
        from collm_nas.finetune.train import HF_BASE_HINT

        print(f"tuned model merged into {result.out / 'merged'} (no GGUF file: the base was a Hugging Face folder); "
              + HF_BASE_HINT.format(out=result.out))
        return 0
    print(f"tuned ranker in {result.out}: search with --strategy lmsearcher --llm local --llm-model {result.out}")
    return 0


def cmd_llm(args: argparse.Namespace) -> int:
    from collm_nas.llm.local_server import serve_forever

    return serve_forever(host=args.host, port=args.port, log=args.log, model=args.model)


def cmd_describe(args: argparse.Namespace) -> int:
    from collm_nas.spaces import SPACES, parse_constraints

    space = SPACES.resolve(args.space)
    parse_constraints(args.constraint)
    print(space.describe(args.constraint))
    return 0


def cmd_encode(args: argparse.Namespace) -> int:
    from collm_nas.spaces import SPACES

    space = SPACES.resolve(args.space)
    print(space.parse_arch(args.value))
    return 0


def cmd_decode(args: argparse.Namespace) -> int:
    from collm_nas.spaces import SPACES

    space = SPACES.resolve(args.space)
    print(space.format_arch(args.value))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from collm_nas.core.settings import load_settings
    from collm_nas.evaluators import EVALUATORS
    from collm_nas.spaces import SPACES, parse_constraints
    from collm_nas.tools import ValidityChecker

    space = SPACES.resolve(args.space)
    resources, known = None, set(space.cost_names)
    constraints = [*space.default_constraints, *args.constraint]
    if constraints and space.name == "nb201":
        evaluator = EVALUATORS.resolve("table", space, dataset=args.dataset,
                                       options={"table": load_settings().table_path(args.table)})
        resources, known = evaluator.resources, known | set(evaluator.resource_names)
    checker = ValidityChecker(space, parse_constraints(constraints, known), resources)
    reports = [checker.report(code) for code in args.ncodes]
    if args.json:
        print(json.dumps(reports))
    else:
        for rep in reports:
            status = "valid" if rep["valid"] else "INVALID"
            print(f"{rep['ncode']}: {status}")
            for p in rep["problems"]:
                print(f"  - {p['kind']}: {p['message']}")
    return 0 if all(r["valid"] for r in reports) else 1


def _format_table(rows: list[dict[str, Any]], cols: Sequence[str]) -> str:
    def cell(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return f"{v:.4f}"
        return str(v)

    texts = [[cell(row.get(c)) for c in cols] for row in rows]
    widths = [max(len(c), *(len(t[i]) for t in texts)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(t, widths)) for t in texts]
    return "\n".join(lines)


COMMANDS = {
    "search": cmd_search,
    "resume": cmd_resume,
    "approve": cmd_approve,
    "history": cmd_history,
    "prune": cmd_prune,
    "fork": cmd_fork,
    "runs": cmd_runs,
    "show": cmd_show,
    "describe": cmd_describe,
    "encode": cmd_encode,
    "decode": cmd_decode,
    "llm": cmd_llm,
    "dashboard": cmd_dashboard,
    "plot": cmd_plot,
    "export-trajectories": cmd_export,
    "finetune": cmd_finetune,
    "check": cmd_check,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except UserError as e:
        print(f"collm-nas: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("collm-nas: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
