"""What the dashboard shows and does, as JSON-ready dicts: one :class:`Board` over one :class:`Workspace`.

The pages and the JSON API (``collm_nas.dashboard.app``) are thin over this. Everything goes through the
API layer: :class:`~collm_nas.api.Workspace` lists runs, reads them (:class:`~collm_nas.api.Run`), shows a
pause (``pending_approval``) and answers it (``approve_in_background``: the same checks, the same one
writer per run as ``collm-nas approve``).

Reading stays cheap as runs grow: each run's trials are kept here and only the newly recorded ones are
read on the next request (trials are never changed once recorded); tables are paginated, the best-so-far
curve is sent as its steps (an improvement is rare) and clouds of points are thinned server-side.
"""

from __future__ import annotations

import math
import re
import threading
import time
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from collm_nas.api import AnswerRefused, BackgroundSearch, Run, Workspace
from collm_nas.core import ACTIVE, AWAITING, Direction, Trial, UserError
from collm_nas.engine.approval import cost_seconds
from collm_nas.faces import run_task

# How many points a chart gets at most (the rest is thinned evenly; front points are always kept).
MAX_CLOUD_POINTS = 2000
MAX_CURVE_POINTS = 600
MAX_PAGE = 500  # rows of one trials page
MAX_ROUNDS_PAGE = 100
MAX_CACHED_TRIALS = 250_000  # trials kept in memory over all runs (the least recently viewed runs go first)
MAX_CACHED_ROUND_RUNS = 64  # runs whose round figures are kept in memory (the least recently viewed go first)
MAX_MEMOS = 64  # curves and scatters kept, by run, trial count and arguments
PRELOAD_FIGURES = 8  # runs whose curve and scatter are drawn up at start (the newest)
# Metrics that are better small, when nothing else says so (the scatter's default directions).
_SMALLER_IS_BETTER = re.compile(r"(param|flop|latency|_ms$|_s$|time|size|mem|loss|error|energy|_mb$|cost)", re.I)


class NotFound(UserError):
    """An unknown run (the pages answer 404)."""


@dataclass
class _Rounds:
    """One run's round figures as read so far, in round order."""

    rounds: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class _Trials:
    """One run's trials as read so far, in evaluation order."""

    trials: list[Trial] = field(default_factory=list)
    last_seq: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _num(value: Any) -> float | None:
    """A finite number as a float, else None (called for every cell of large tables: the common types first)."""
    kind = type(value)
    if kind is float:
        return value if math.isfinite(value) else None
    if kind is int:
        return float(value)
    if kind is bool or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _thin(items: Sequence[Any], most: int) -> list[Any]:
    """At most ``most`` items, evenly spread, the last one kept."""
    if len(items) <= most:
        return list(items)
    step = len(items) / most
    picked = [items[int(i * step)] for i in range(most - 1)]
    return picked + [items[-1]]


class Board:
    """The dashboard's reads and answers over one workspace (opened on first use; thread-safe)."""

    def __init__(self, open_workspace: Callable[[], Workspace], *, owns_workspace: bool = True) -> None:
        self._open = open_workspace
        self._owns = owns_workspace  # close() closes the workspace it opened (not one it was lent)
        self._ws: Workspace | None = None
        self._lock = threading.Lock()
        self._trials: OrderedDict[str, _Trials] = OrderedDict()
        self._rounds: OrderedDict[str, _Rounds] = OrderedDict()
        self._memos: OrderedDict[tuple, Any] = OrderedDict()
        self._uses_llm: dict[str, bool | None] = {}
        self.answers: dict[str, BackgroundSearch] = {}  # the last answer this dashboard gave, by run

    # ----------------------------------------------------------- workspace
    @property
    def ws(self) -> Workspace:
        with self._lock:
            if self._ws is None:
                self._ws = self._open()
            return self._ws

    @property
    def location(self) -> str:
        return self.ws.location

    def run(self, run_id: str) -> Run:
        if self.ws.store.get_run(run_id) is None:
            raise NotFound(f"unknown run '{run_id}': the store {self.ws.location} holds no run of that name")
        return self.ws.run(run_id)

    def trials(self, run: Run) -> list[Trial]:
        """All the run's trials, reading only those recorded since the last call."""
        with self._lock:
            held = self._trials.get(run.run_id)
            if held is None:
                held = self._trials[run.run_id] = _Trials()
            self._trials.move_to_end(run.run_id)
        with held.lock:
            new = run.trials(after_seq=held.last_seq)
            if new:
                held.trials.extend(new)
                held.last_seq = new[-1].seq
            out = list(held.trials)
        if new:
            with self._lock:  # the least recently viewed runs leave memory first
                total = sum(len(h.trials) for h in self._trials.values())
                while total > MAX_CACHED_TRIALS and len(self._trials) > 1:
                    _, old = self._trials.popitem(last=False)
                    total -= len(old.trials)
        return out

    def round_figures(self, run: Run) -> list[dict[str, Any]]:
        """All the run's round figures, reading only the newest one again (a resumed run may write its
        interrupted round anew) and those recorded since the last call."""
        with self._lock:
            held = self._rounds.get(run.run_id)
            if held is None:
                held = self._rounds[run.run_id] = _Rounds()
            self._rounds.move_to_end(run.run_id)
            while len(self._rounds) > MAX_CACHED_ROUND_RUNS:
                self._rounds.popitem(last=False)
        with held.lock:
            last = held.rounds[-1]["round"] if held.rounds else None
            fresh = run.rounds(after_round=last - 1) if last is not None else run.rounds()
            if fresh:
                first = fresh[0]["round"]
                while held.rounds and held.rounds[-1]["round"] >= first:
                    held.rounds.pop()
                held.rounds.extend(fresh)
            return list(held.rounds)

    def _memo(self, key: tuple, compute: Callable[[], Any]) -> Any:
        """A figure derived from a run's trials, kept by (kind, run, trial count, arguments)."""
        with self._lock:
            if key in self._memos:
                self._memos.move_to_end(key)
                return self._memos[key]
        value = compute()
        with self._lock:
            self._memos[key] = value
            while len(self._memos) > MAX_MEMOS:
                self._memos.popitem(last=False)
        return value

    def start_preload(self, budget: int) -> threading.Thread | None:
        """:meth:`preload` in a background thread (the server answers meanwhile); None when ``budget`` is 0."""
        if budget <= 0:
            return None
        thread = threading.Thread(target=self.preload, args=(budget,), name="collm-nas-dashboard-preload",
                                  daemon=True)
        thread.start()
        return thread

    def preload(self, budget: int) -> int:
        """Read the newest runs' trials (up to ``budget`` in all, and the newest runs' rounds) before anyone asks;
        returns how many trials."""
        total = 0
        try:
            for k, info in enumerate(sorted(self.ws.runs(), key=lambda i: i.updated_at, reverse=True)):
                if total + info.n_trials > budget:
                    continue
                run = Run(self.ws.store, info)
                total += len(self.trials(run))
                if k < PRELOAD_FIGURES:  # the newest runs' rounds and charts too, as their pages first ask for them
                    self.round_figures(run)
                    self.curve(info.run_id)
                    self.scatter(info.run_id)
        except Exception:  # a store that went away: the pages will say so, in one line
            pass
        return total

    def _uses_llm_for(self, strategy: str) -> bool | None:
        if strategy not in self._uses_llm:
            from collm_nas.agents import STRATEGIES

            try:
                self._uses_llm[strategy] = bool(STRATEGIES.resolve(strategy).uses_llm)
            except Exception:  # a user's strategy module that does not import here: say nothing
                self._uses_llm[strategy] = None
        return self._uses_llm[strategy]

    def _llm_label(self, cfg: dict[str, Any]) -> str | None:
        if self._uses_llm_for(str(cfg.get("strategy") or "")) is False or cfg.get("llm") == "none":
            return None
        model = cfg.get("llm_model") or cfg.get("navigator_model")
        return f"{cfg.get('llm')}: {model}" if model else cfg.get("llm")

    # ---------------------------------------------------------------- runs
    def run_list(self, *, offset: int = 0, limit: int | None = None, sort: str = "created_at", order: str = "asc",
                 q: str = "") -> dict[str, Any]:
        """A page of the runs (all of them without ``limit``), sorted by any column, filtered by text in the
        run id, status, space, dataset, strategy or LLM; and every run waiting for approval, whatever the page."""
        rows = self.runs()
        awaiting = [r["run_id"] for r in rows if r["awaiting"]]
        needle = q.strip().lower()
        if needle:
            rows = [r for r in rows if any(needle in str(r.get(k) or "").lower()
                                           for k in ("run_id", "status", "space", "dataset", "strategy", "llm"))]
        present = [r for r in rows if r.get(sort) is not None]
        missing = [r for r in rows if r.get(sort) is None]
        present.sort(key=lambda r: (0, r[sort], "") if _num(r[sort]) is not None else (1, 0.0, str(r[sort])),
                     reverse=order == "desc")
        rows = present + missing
        offset = max(0, int(offset))
        page = rows[offset:] if limit is None else rows[offset: offset + max(1, int(limit))]
        return {"location": self.location, "total": len(rows), "offset": offset, "limit": limit, "sort": sort,
                "order": order, "awaiting": awaiting, "runs": page}

    def runs(self) -> list[dict[str, Any]]:
        """Every run, oldest first, as the runs page lists it."""
        rows = []
        for info in self.ws.runs():
            cfg = info.config
            evaluations = info.n_trials
            if info.status == ACTIVE:  # n_trials is written once a round: count the live run's trials
                evaluations = self.ws.store.count_trials(info.run_id)
            rows.append({
                "run_id": info.run_id,
                "status": info.display_status,
                "awaiting": info.status == AWAITING,
                "stop_reason": info.stop_reason,
                "space": cfg.get("space"),
                "dataset": run_task(cfg),
                "strategy": cfg.get("strategy"),
                "llm": self._llm_label(cfg),
                "evaluations": evaluations,
                "budget": cfg.get("budget"),
                "best_value": info.best_value,
                "best_ncode": info.best_ncode,
                "metric": cfg.get("metric"),
                "mode": cfg.get("mode"),
                "seed": cfg.get("seed"),
                "created_at": info.created_at,
                "updated_at": info.updated_at,
            })
        return rows

    # ------------------------------------------------------------- one run
    def status(self, run_id: str) -> dict[str, Any]:
        """What changes while a run goes on: the pages ask for this every second or two."""
        run = self.run(run_id)
        trials = self.trials(run)
        info = run.info
        answer = self.answers.get(run_id)
        return {"run_id": run_id, "status": info.display_status, "awaiting": info.status == AWAITING,
                "evaluations": len(trials), "budget": run.config.budget, "updated_at": info.updated_at,
                "stop_reason": info.stop_reason, "answering": bool(answer and answer.running)}

    def summary(self, run_id: str) -> dict[str, Any]:
        """The run page's header, figures and configuration."""
        run = self.run(run_id)
        trials = self.trials(run)
        result = run.result(trials=trials, rounds=self.round_figures(run))
        data = result.to_dict()
        info = run.info
        cfg = info.config
        pending = self.ws.pending_approval(run_id) if info.status == AWAITING else None
        notes = self.ws.store.notes(run_id)
        host = notes.get("host")
        return {
            **{k: data[k] for k in ("run_id", "status", "stop_reason", "evaluations", "budget", "searched_metric",
                                    "reported_metric", "metric_note", "best", "config")},
            **{k: data[k] for k in ("objectives", "hypervolume", "hv_reference", "hv_reference_rule") if k in data},
            "front_size": len(data["pareto"]) if "pareto" in data else None,
            "awaiting": info.status == AWAITING,
            "pending_round": pending["round"] if pending else None,
            "mode": cfg.get("mode", "max"),
            "space": cfg.get("space"),
            "dataset": run_task(cfg),
            "strategy": cfg.get("strategy"),
            "llm": self._llm_label(cfg),
            "llm_summary": data.get("llm"),
            "degraded": data.get("degraded"),
            "failed": sum(1 for t in trials if not t.ok),
            "created_at": info.created_at,
            "updated_at": info.updated_at,
            "hosted_by": host.get("url") if host else None,
            "parent": cfg.get("parent"),
            "answer": self._answer_state(run_id),
        }

    @staticmethod
    def _row(number: int, t: Trial) -> dict[str, Any]:
        return {"eval": number, "seq": t.seq, "round": t.round, "ncode": t.ncode, "arch": t.arch, "status": t.status,
                "value": t.value, "metrics": t.metrics, "seconds": cost_seconds(t.cost or {}), "cost": t.cost,
                "error": t.error, "created_at": t.created_at}

    def trial_page(self, run_id: str, *, offset: int = 0, limit: int = 50, sort: str = "eval", order: str = "asc",
                   q: str = "", status: str = "all") -> dict[str, Any]:
        """One page of the trials table: filtered (``q``: text in the NCode, architecture or error, or
        conditions like ``params_mb<=1 and cifar10_valid>90``; ``status``: ok / failed / all), sorted by any
        column or metric, and the columns (every metric the run's trials hold). Rows are built for the page
        only."""
        run = self.run(run_id)
        trials = self.trials(run)
        metrics = list(dict.fromkeys(k for t in trials for k in t.metrics))
        numbered = list(enumerate(trials, 1))
        if status in ("ok", "failed"):
            numbered = [(i, t) for i, t in numbered if t.ok == (status == "ok")]
        if q.strip():
            keep = row_filter(q, metrics)
            numbered = [(i, t) for i, t in numbered if keep(trial_cells(i, t))]
        if sort != "eval" or order != "asc":
            numbered = sort_rows(numbered, sort, order)
        limit = max(1, min(int(limit), MAX_PAGE))
        offset = max(0, int(offset))
        return {"run_id": run_id, "total": len(numbered), "all": len(trials), "offset": offset, "limit": limit,
                "sort": sort, "order": order, "metrics": metrics, "searched_metric": run.searched_metric,
                "rows": [self._row(i, t) for i, t in numbered[offset: offset + limit]]}

    def curve(self, run_id: str, which: str = "searched") -> dict[str, Any]:
        """The best-so-far curve as its steps (each evaluation where the best changed, and the last one), and
        every trial's value thinned to at most :data:`MAX_CLOUD_POINTS` points."""
        run = self.run(run_id)
        trials = self.trials(run)
        return self._memo(("curve", run_id, len(trials), which), lambda: self._curve(run, trials, which))

    def _curve(self, run: Run, trials: list[Trial], which: str) -> dict[str, Any]:
        run_id = run.run_id
        direction = Direction.of(run.config.mode)
        metric = run.reported_metric if which == "reported" else run.searched_metric
        steps: list[dict[str, Any]] = []
        best: Trial | None = None
        values = []
        for i, t in enumerate(trials):
            if t.ok:
                shown = _num(t.metrics.get(metric, t.value)) if which == "reported" else _num(t.value)
                if shown is not None:
                    values.append([i + 1, shown])
                if direction.better(t.value, best.value if best is not None else None):
                    best = t
                    steps.append({"eval": i + 1, "value": _num(best.metrics.get(metric, best.value))
                                  if which == "reported" else _num(best.value), "ncode": t.ncode, "arch": t.arch,
                                  "searched": _num(t.value), "round": t.round})
        return {"run_id": run_id, "metric": metric, "which": which, "mode": direction.value,
                "evaluations": len(trials), "budget": run.config.budget, "steps": steps,
                "values": _thin(values, MAX_CLOUD_POINTS)}

    def scatter(self, run_id: str, x: str | None = None, y: str | None = None, xdir: str | None = None,
                ydir: str | None = None) -> dict[str, Any]:
        """Two metrics of every successful trial, the non-dominated ones marked (thinned, the front kept)."""
        run = self.run(run_id)
        every = self.trials(run)
        return self._memo(("scatter", run_id, len(every), x, y, xdir, ydir),
                          lambda: self._scatter(run, every, x, y, xdir, ydir))

    def _scatter(self, run: Run, every: list[Trial], x: str | None, y: str | None, xdir: str | None,
                 ydir: str | None) -> dict[str, Any]:
        numeric = numeric_metrics(every)
        objectives = run.objectives
        if objectives is not None:
            wanted_y, wanted_x = objectives.metrics[0], objectives.metrics[1]
        else:
            wanted_y = run.searched_metric
            wanted_x = next((m for m in numeric if m != wanted_y and _SMALLER_IS_BETTER.search(m)),
                            next((m for m in numeric if m != wanted_y), wanted_y))
        x = x if x in numeric else wanted_x
        y = y if y in numeric else wanted_y
        xdir = xdir if xdir in ("max", "min") else self._direction(run, x)
        ydir = ydir if ydir in ("max", "min") else self._direction(run, y)
        points = []  # [x, y, evaluation, ncode]
        for number, t in enumerate(every, 1):
            if t.ok:
                px, py = _num(t.metrics.get(x)), _num(t.metrics.get(y))
                if px is not None and py is not None:
                    points.append([px, py, number, t.ncode])
        front = non_dominated_2d(points, xdir, ydir)
        on_front = {id(p) for p in front}
        arch = {t.ncode: t.arch for t in every}
        return {"run_id": run.run_id, "metrics": numeric, "x": x, "y": y, "xdir": xdir, "ydir": ydir,
                "count": len(points),
                "front": [{"x": p[0], "y": p[1], "eval": p[2], "ncode": p[3], "arch": arch[p[3]]}
                          for p in sorted(front, key=lambda p: p[0])],
                "points": _thin([p for p in points if id(p) not in on_front], MAX_CLOUD_POINTS)}

    @staticmethod
    def _direction(run: Run, metric: str) -> str:
        objectives = run.objectives
        if objectives is not None and metric in objectives.metrics:
            return objectives.items[objectives.metrics.index(metric)].mode
        if metric == run.searched_metric or metric == run.reported_metric:
            return run.config.mode
        return "min" if _SMALLER_IS_BETTER.search(metric) else "max"

    def rounds(self, run_id: str, *, offset: int = 0, limit: int = 20, order: str = "desc") -> dict[str, Any]:
        """The run's rounds (newest first by default): the Navigator's strategy, the Generator's proposals with
        what the Coordinator did to each, the person's answer, and the round's figures."""
        run = self.run(run_id)
        rounds = self.round_figures(run)
        if order != "asc":
            rounds = rounds[::-1]
        limit = max(1, min(int(limit), MAX_ROUNDS_PAGE))
        offset = max(0, int(offset))
        return {"run_id": run_id, "total": len(rounds), "offset": offset, "limit": limit, "order": order,
                "rounds": rounds[offset: offset + limit]}

    # ------------------------------------------------------------- compare
    def compare(self, run_ids: Sequence[str], which: str = "reported") -> dict[str, Any]:
        """Best-so-far curves of several runs on one chart per task: runs of one strategy (seeds repeating)
        give a mean line and a min-max band, drawn at the evaluations where any of them changed."""
        from collm_nas.evaluators import run_label

        groups: dict[tuple[str, str], list[tuple[str, list[tuple[int, float]], int]]] = {}
        runs_out = []
        for run_id in dict.fromkeys(run_ids):
            run = self.run(run_id)
            cfg = run.config
            steps = self.curve(run_id, which)
            panel = str(run_label(cfg.evaluator, cfg.space, cfg.dataset))
            line = [(s["eval"], s["value"]) for s in steps["steps"] if s["value"] is not None]
            groups.setdefault((panel, cfg.strategy), []).append((run_id, line, steps["evaluations"]))
            runs_out.append({"run_id": run_id, "strategy": cfg.strategy, "panel": panel, "seed": cfg.seed,
                             "status": run.status, "evaluations": steps["evaluations"], "budget": cfg.budget,
                             "metric": steps["metric"]})
        series = []
        for (panel, strategy), members in groups.items():
            xs = sorted({x for _, line, _ in members for x, _ in line} | {n for _, _, n in members if n})
            xs = _thin(xs, MAX_CURVE_POINTS)
            points = []
            for x in xs:
                column = []
                for _, line, n in members:
                    if x > n:
                        continue
                    k = bisect_right([e for e, _ in line], x)
                    if k:
                        column.append(line[k - 1][1])
                if column:
                    points.append([x, sum(column) / len(column), min(column), max(column), len(column)])
            series.append({"panel": panel, "label": strategy, "runs": [m[0] for m in members], "points": points})
        return {"which": which, "runs": runs_out, "series": series}

    # ------------------------------------------------------------ approval
    def _answer_state(self, run_id: str) -> dict[str, Any] | None:
        answer = self.answers.get(run_id)
        if answer is None:
            return None
        error = answer.error
        return {"reply": answer.reply, "running": answer.running, "hosted_by": answer.hosted_by,
                "started_at": answer.started_at,
                "result": answer.result.status if answer.result is not None else None,
                "error": None if error is None else (str(error) or type(error).__name__)}

    def approval(self, run_id: str) -> dict[str, Any]:
        run = self.run(run_id)
        pending = self.ws.pending_approval(run_id) if run.info.status == AWAITING else None
        return {"run_id": run_id, "status": run.info.display_status, "pending": pending,
                "evaluations": len(self.trials(run)), "budget": run.config.budget,
                "answer": self._answer_state(run_id)}

    def check_answer(self, run_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """Whether an answer would be taken now, taking nothing: ``{"ok": true, "reply"}`` or
        ``{"ok": false, "error": the one line that answering would raise}``."""
        self.run(run_id)
        decision, expect_round = _decision(body)
        try:
            reply = self.ws.check_answer(run_id, decision, expect_round=expect_round)
        except UserError as e:
            return {"ok": False, "error": str(e), "refused": isinstance(e, AnswerRefused)}
        return {"ok": True, "reply": reply}

    def answer(self, run_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """Answer the run's pause as ``collm-nas approve`` does; the run goes on in a thread of this server (or
        in the LangGraph server that hosts it). Raises AnswerRefused / UserError in one line."""
        self.run(run_id)
        decision, expect_round = _decision(body)
        handle = self.ws.approve_in_background(run_id, decision, expect_round=expect_round)
        self.answers[run_id] = handle
        return {"taken": True, "run_id": run_id, "reply": handle.reply, "hosted_by": handle.hosted_by}

    def close(self, wait_s: float = 60.0, say: Callable[[str], None] | None = None) -> None:
        """Stop the runs this dashboard drives once their step in flight (a batch being evaluated) is done;
        they stay resumable."""
        running = [a for a in self.answers.values() if a.running]
        for answer in running:
            if say is not None:
                say(f"stopping run {answer.run_id} once the batch in flight is evaluated (it stays resumable: "
                    f"collm-nas resume {answer.run_id})")
            answer.stop(timeout=0)  # ask all first, then wait for them together
        deadline = time.time() + wait_s
        for answer in running:
            answer.stop(max(0.0, deadline - time.time()))
        with self._lock:
            ws, self._ws = self._ws, None
        if ws is not None and self._owns and not any(a.running for a in running):
            ws.close()


def _decision(body: Any) -> tuple[Any, int | None]:
    """An answer's reply (ours or LangChain's decisions) and the round of the pause it answers."""
    if isinstance(body, str):
        return body, None
    if not isinstance(body, dict):
        raise UserError("an answer is a JSON object: {\"action\": \"approve\" | \"edit\" | \"reject\", ...} or "
                        "{\"decisions\": [...]}, with \"round\": the round of the pause")
    body = dict(body)
    expect = body.pop("round", None)
    if expect is not None and (isinstance(expect, bool) or not isinstance(expect, int)):
        raise UserError(f"'round' must be the round number of the pause, got {expect!r}")
    return body, expect


# ------------------------------------------------------------------ tables
_CONDITION = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(<=|>=|==|!=|<|>|=)\s*(-?[\d.]+(?:e-?\d+)?)\s*$", re.I)
_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": lambda a, b: a < b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b,
    "=": lambda a, b: a == b, "==": lambda a, b: a == b, "!=": lambda a, b: a != b}


_COLUMNS = ("eval", "round", "ncode", "arch", "status", "value", "seconds", "error")


def trial_cells(number: int, t: Trial) -> dict[str, Any]:
    """A trial's table cells: the fixed columns and every metric (what filters and sorting read)."""
    return {"eval": number, "round": t.round, "ncode": t.ncode, "arch": t.arch, "status": t.status,
            "value": t.value, "seconds": cost_seconds(t.cost or {}), "error": t.error, "metrics": t.metrics}


def _cell(row: dict[str, Any], column: str) -> Any:
    if column in _COLUMNS:
        return row.get(column)
    return row["metrics"].get(column)


def row_filter(q: str, metrics: Sequence[str]) -> Callable[[dict[str, Any]], bool]:
    """A test for table rows: conditions on numbers (``params_mb<=1 and round>3``, also ``,``-separated),
    else text that the NCode, architecture, status or error contains (case-insensitive)."""
    q = (q or "").strip()
    if not q:
        return lambda row: True
    parts = [p for p in re.split(r"\s+and\s+|,", q, flags=re.I) if p.strip()]
    conditions = [_CONDITION.match(p) for p in parts]
    if all(conditions):
        tests = []
        for m in conditions:
            assert m is not None
            tests.append((m.group(1), _OPS[m.group(2)], float(m.group(3))))

        def keep(row: dict[str, Any]) -> bool:
            for column, op, bound in tests:
                value = _num(_cell(row, column))
                if value is None or not op(value, bound):
                    return False
            return True

        return keep
    needle = q.lower()
    return lambda row: any(needle in str(row.get(k) or "").lower() for k in ("ncode", "arch", "status", "error"))


def sort_rows(numbered: list[tuple[int, Trial]], column: str, order: str) -> list[tuple[int, Trial]]:
    """(evaluation number, trial) pairs sorted by a column or a metric; empty cells last either way."""
    def cell(item: tuple[int, Trial]) -> Any:
        number, t = item
        if column == "eval":
            return number
        if column in _COLUMNS:
            return trial_cells(number, t)[column]
        return t.metrics.get(column)

    present = [(cell(item), item) for item in numbered]
    missing = [item for value, item in present if value is None]
    present = [(value, item) for value, item in present if value is not None]
    numeric = [(v, item) for v, item in present if _num(v) is not None]
    other = [(str(v), item) for v, item in present if _num(v) is None]
    reverse = order == "desc"
    numeric.sort(key=lambda pair: pair[0], reverse=reverse)
    other.sort(key=lambda pair: pair[0], reverse=reverse)
    return [item for _, item in numeric] + [item for _, item in other] + missing


def non_dominated_2d(points: list[Any], xdir: str, ydir: str) -> list[Any]:
    """The points (``[x, y, ...]``) no other point beats on both axes (``xdir`` / ``ydir``: max or min), in
    O(n log n); a point equal to one on the front is on it too."""
    sx = 1.0 if xdir == "max" else -1.0
    sy = 1.0 if ydir == "max" else -1.0
    ordered = sorted(points, key=lambda p: (-sx * p[0], -sy * p[1]))
    front: list[Any] = []
    best_y = -math.inf
    last: tuple[float, float] | None = None
    for p in ordered:
        y = sy * p[1]
        if y > best_y or (last is not None and (sx * p[0], y) == last):
            front.append(p)
            best_y = max(best_y, y)
            last = (sx * p[0], y)
    return front


def numeric_metrics(trials: Sequence[Trial]) -> list[str]:
    """The metrics the trials hold as numbers, in the order they first appear."""
    names: dict[str, bool] = {}
    for t in trials:
        for k, v in t.metrics.items():
            if not names.get(k) and _num(v) is not None:
                names[k] = True
            else:
                names.setdefault(k, False)
    return [k for k, numeric in names.items() if numeric]
