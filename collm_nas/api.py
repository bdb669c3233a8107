"""The Python API: start, resume and inspect searches.

    from collm_nas import Workspace
    ws = Workspace("runs")
    result = ws.search(space="nb201", dataset="cifar10", strategy="rea", budget=100, seed=0)
    print(result.best.ncode, result.best.metrics)
    for trial in ws.run(result.run_id).trials():
        ...

A :class:`Workspace` is a runs directory: one SQLite file holding the
LangGraph checkpoints (thread id = run id) and the trial store; or, with
``store="postgres://..."`` (``COLLM_NAS_STORE``), a PostgreSQL database
holding both, shared by every machine that names it.
"""

from __future__ import annotations

import json
import queue
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.types import Command

from collm_nas.agents import Trial, make_strategy
from collm_nas.errors import UserError
from collm_nas.evaluators import DEFAULT_DATASETS, TrialResult
from collm_nas.evaluators.parallel import require_backend
from collm_nas.graphs.components import components_for, open_store
from collm_nas.graphs.approval import apply_edit, parse_reply
from collm_nas.graphs.graph import FINISH as FINISH_NODE
from collm_nas.graphs.graph import NAVIGATOR, build_graph
from collm_nas.graphs.graph import RECORD as RECORD_NODE
from collm_nas.graphs.state import RunConfig, SearchContext
from collm_nas.graphs.locator import is_postgres
from collm_nas.graphs.store import (AWAITING, FAILED, FINISHED, INTERRUPTED, BaseTrialStore, RunInfo,
                                    TrialStore)
from collm_nas.settings import Settings, load_settings
from collm_nas.spaces import BUILTIN_SPACES, load_space_file

if TYPE_CHECKING:  # the LLM stack is imported only by runs that use it
    from collm_nas.agents.llm_session import LLMRoles

ProgressFn = Callable[[dict[str, Any]], None]
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclass
class SearchResult:
    """How a search ended and what it found."""

    run_id: str
    status: str
    stop_reason: str | None
    evaluations: int
    budget: int
    best: Trial | None
    searched_metric: str
    reported_metric: str
    metric_note: str
    seconds: float
    found_at: int | None = None  # evaluations used when the best was found
    config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        best = None
        if self.best is not None:
            best = {
                "ncode": self.best.ncode,
                "arch": self.best.arch,
                "metrics": self.best.metrics,
                "searched": self.best.metrics.get(self.searched_metric),
                "reported": self.best.metrics.get(self.reported_metric),
                "found_at": self.found_at,
            }
        return {
            "run_id": self.run_id,
            "status": self.status,
            "stop_reason": self.stop_reason,
            "evaluations": self.evaluations,
            "budget": self.budget,
            "searched_metric": self.searched_metric,
            "reported_metric": self.reported_metric,
            "metric_note": self.metric_note,
            "best": best,
            "seconds": round(self.seconds, 3),
            "config": self.config,
        }


class Run:
    """A stored run: its configuration, status, trials and round figures."""

    def __init__(self, store: TrialStore, info: RunInfo) -> None:
        self.store = store
        self.info = info

    @property
    def run_id(self) -> str:
        return self.info.run_id

    @property
    def config(self) -> RunConfig:
        return RunConfig.model_validate(self.info.config)

    @property
    def status(self) -> str:
        return self.info.display_status

    def trials(self, top: int | None = None, mode: str | None = None) -> list[Trial]:
        """Trials in evaluation order, or the ``top`` best by the searched metric."""
        trials = self.store.trials(self.run_id)
        if top is None:
            return trials
        mode = mode or self.config.mode
        ok = [t for t in trials if t.ok]
        ok.sort(key=lambda t: t.value, reverse=(mode == "max"))
        return ok[:top]

    def best(self) -> Trial | None:
        best = self.trials(top=1)
        return best[0] if best else None

    def rounds(self) -> list[dict[str, Any]]:
        return self.store.rounds(self.run_id)

    def llm_summary(self) -> dict[str, Any] | None:
        """The run's LLM figures over all rounds (None for LLM-free runs)."""
        return summarise_llm_rounds(self.rounds())


def _planned_note(rounds: list[dict[str, Any]]) -> str:
    skipped = sum(1 for r in rounds if r.get("llm_planned") is False)
    return f", {skipped} needed none" if skipped else ""


def summarise_llm_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any] | None:
    llm_rounds = [r for r in rounds if "llm" in r]
    if not llm_rounds:
        return None

    def total(key: str) -> int:
        return sum(int(r.get(key) or 0) for r in llm_rounds)

    proposed = total("proposed")
    calls = sum(r["llm"]["calls"] for r in llm_rounds)
    latency = sum(r["llm"]["latency_s"] for r in llm_rounds)
    modes: dict[str, list[str]] = {}
    for r in llm_rounds:
        for role, mode in r["llm"]["modes"].items():
            if mode and mode not in modes.setdefault(role, []):
                modes[role].append(mode)
    nav_tokens = {r["round"]: r["llm"]["prompt_tokens_by_role"]["navigator"] for r in llm_rounds
                  if r["llm"]["prompt_tokens_by_role"].get("navigator")}
    shown = sorted(nav_tokens)
    if len(shown) > 6:
        shown = shown[:2] + shown[len(shown) // 2: len(shown) // 2 + 1] + shown[-2:]
    return {
        "rounds": len(rounds),
        "llm_rounds": sum(1 for r in llm_rounds if r["llm"]["calls"] > r["llm"]["failed_calls"]),
        # Rounds where a call failed, or that the strategy meant for the LLM but ran without one.
        "fallback_rounds": sum(1 for r in llm_rounds if r["llm"]["failed_calls"]
                               or (r["llm"]["calls"] == 0 and r.get("llm_planned", True))),
        "planned_note": _planned_note(llm_rounds),
        "proposed": proposed,
        "illegal": total("illegal"),
        "duplicates": total("duplicates"),
        "accepted": total("accepted"),
        "topped_up": total("topped_up"),
        "ranked_out": total("ranked_out"),
        "corrections": total("corrections"),
        "illegal_rate": total("illegal") / proposed if proposed else 0.0,
        "duplicate_rate": total("duplicates") / proposed if proposed else 0.0,
        "calls": calls,
        "failed_calls": sum(r["llm"]["failed_calls"] for r in llm_rounds),
        "prompt_tokens": sum(r["llm"]["prompt_tokens"] for r in llm_rounds),
        "completion_tokens": sum(r["llm"]["completion_tokens"] for r in llm_rounds),
        "latency_s": latency,
        "latency_per_call_s": latency / calls if calls else 0.0,
        "modes": modes,
        "navigator_prompt_tokens": {r: nav_tokens[r] for r in shown},
    }


class SearchStopped(KeyboardInterrupt):
    """Raised inside a search whose event stream the caller stopped reading (the run stays resumable)."""


class Workspace:
    """A runs directory: start, resume, list and read searches."""

    def __init__(self, runs_dir: str | Path | None = None, *, settings: Settings | None = None,
                 table_path: str | Path | None = None, store: str | None = None) -> None:
        self.settings = settings or load_settings()
        # ``store`` (else COLLM_NAS_STORE): a postgres:// URL shared by a team, or a SQLite file;
        # by default collm-nas.db in the runs folder.
        locator = self.settings.store_locator(runs_dir, store)
        self.store_url = locator.target  # the store locator; a URL may hold a password: never print it
        if locator.kind == "sqlite":
            self._db_path: Path | None = Path(locator.target)
            self.runs_dir = self._db_path.parent
            self.location = str(self.runs_dir)  # how messages name the store
        else:  # runs live in PostgreSQL; the runs folder keeps this machine's LLM server logs
            self._db_path = None
            self.runs_dir = Path(runs_dir or self.settings.runs_dir).expanduser()
            self.location = locator.display
        self.table_path = self.settings.table_path(table_path)
        self.store: BaseTrialStore = open_store(self.store_url)

    @property
    def db_path(self) -> Path:
        """The SQLite database file (checkpoints and trial store); a PostgreSQL store has none."""
        if self._db_path is None:
            raise UserError(f"this workspace keeps its runs in PostgreSQL ({self.location}), not in a SQLite file")
        return self._db_path

    # --------------------------------------------------------------- reading
    def runs(self) -> list[RunInfo]:
        return self.store.list_runs()

    def run(self, run_id: str) -> Run:
        info = self.store.get_run(run_id)
        if info is None:
            raise UserError(f"unknown run '{run_id}'; 'collm-nas runs' lists the runs in {self.location}")
        return Run(self.store, info)

    # --------------------------------------------------------------- running
    def search(
        self,
        *,
        space: str = "nb201",
        dataset: str | None = None,
        strategy: str = "rea",
        budget: int = 100,
        seed: int = 0,
        evaluator: str = "table",
        batch_size: int | None = None,
        constraints: Sequence[str] = (),
        target: float | None = None,
        metric: str | None = None,
        mode: str = "max",
        run_id: str | None = None,
        on_progress: ProgressFn | None = None,
        patience: int | None = None,
        llm: str = "auto",
        llm_options: dict[str, Any] | None = None,
        llm_roles: "LLMRoles | None" = None,
        fallback: str = "local",
        prior: Sequence[str] = (),
        backend: str | None = None,
        workers: int | None = None,
        train_options: dict[str, Any] | None = None,
        approval: str = "never",
        approval_threshold_s: float | None = None,
    ) -> SearchResult:
        """Start a new search and run it to its end (budget, target, patience, or exhausted space).

        ``evaluator`` is ``table`` (NAS-Bench-201 results; ``dataset`` cifar10 by
        default, cifar100 or imagenet16), ``train`` (real training of every
        architecture of ``nb201`` or ``mbv3``; ``dataset`` digits by default,
        cifar10, cifar100, torchvision:NAME or imagefolder:PATH; ``train_options``
        such as ``{"epochs": 20, "channels": 16, "data_dir": "~/data"}``),
        ``supernet`` (nb201 weights inherited from a supernet trained once and
        cached in ``RUNS_DIR/supernets``; ``train_options`` of
        :class:`SupernetConfig`), ``proxy`` (nb201 zero-cost proxies;
        ``{"proxy": "naswot"}``...) or a ``module.path:function``.

        ``backend`` evaluates each batch ``serial`` (in this process), on a ``process``
        pool or on ``ray`` with ``workers`` concurrent evaluations (defaults:
        ``COLLM_NAS_BACKEND`` / ``COLLM_NAS_WORKERS``); the results are the same on all.

        LLM strategies (``collm``) talk to ``llm``: ``auto`` (a configured
        endpoint, else the local model, else none: the LLM-free ``fallback``
        runs and ``on_progress`` gets a warning), ``endpoint``, ``local`` or
        ``none``; ``llm_roles`` passes your own LangChain chat models.
        ``llm_options`` sets role options such as ``{"model": ..., "generator.temperature": 0.2}``.

        ``approval`` (``never``, ``every_round`` or ``over_cost`` with
        ``approval_threshold_s``) pauses the search before a batch is evaluated:
        the call returns with status ``awaiting approval``;
        :meth:`pending_approval` shows the batch and :meth:`approve` answers and
        goes on.
        """
        definition = None
        if space not in BUILTIN_SPACES and space.lower().endswith((".yaml", ".yml", ".json")):
            definition = load_space_file(space).to_dict()
        config = RunConfig(
            space=space,
            space_definition=definition,
            evaluator=evaluator,
            dataset=dataset if dataset is not None else DEFAULT_DATASETS.get(evaluator, "cifar10"),
            train_options=_with_supernet_cache(evaluator, train_options, self.runs_dir),
            strategy=strategy,
            budget=budget,
            seed=seed,
            batch_size=batch_size,
            constraints=list(constraints),
            target=target,
            metric=metric,
            mode=mode,  # type: ignore[arg-type]
            patience=patience,
            fallback=fallback,
            prior=list(prior),
            backend=backend or self.settings.backend,
            workers=workers if workers is not None else self.settings.workers,
            approval=approval,  # type: ignore[arg-type]
            approval_threshold_s=approval_threshold_s,
        )
        if approval == "over_cost" and approval_threshold_s is None:
            raise UserError("approval over_cost needs a threshold; give approval_threshold_s "
                            "(--approval-threshold SECONDS)")
        note = None
        if make_strategy(strategy).uses_llm:
            from collm_nas.agents.llm_session import check_role_options, resolve_llm

            config.llm_options = check_role_options(llm_options or {})
            if llm_roles is not None:
                config.llm = "custom"
            else:
                config.llm, note = resolve_llm(llm)  # type: ignore[assignment]
                if note:
                    chosen = make_strategy(strategy)
                    note += (f": the LLM-free fallback strategy '{fallback}' runs instead" if chosen.needs_llm
                             else f": {strategy} uses its learned ranker")
        run_id = run_id or self._new_run_id(config)
        if not _RUN_ID.match(run_id):
            raise UserError(f"bad run id '{run_id}'; use letters, digits, '.', '_' and '-' (at most 100)")
        if self.store.get_run(run_id) is not None:
            raise UserError(f"run '{run_id}' already exists; resume it with 'collm-nas resume {run_id}' or pick another --run-id")
        components_for(self.store_url, run_id, config, self.table_path)  # validates the whole configuration
        require_backend(config.backend)  # e.g. Ray installed, before the run exists
        _prepare(components_for(self.store_url, run_id, config, self.table_path).evaluator)  # data present
        self.store.create_run(run_id, config.model_dump(mode="json"))
        initial = {"run_id": run_id, "config": config.model_dump(mode="json"), "round": 0, "evaluated": 0,
                   "memory": {}, "best": None, "stop_reason": None}
        if note and on_progress is not None:
            on_progress({"event": "warning", "round": 0, "message": note})
        return self._drive(run_id, config, initial, on_progress, llm_roles)

    def resume(self, run_id: str, on_progress: ProgressFn | None = None,
               llm_roles: "LLMRoles | None" = None) -> SearchResult:
        """Continue an interrupted run to its end; nothing recorded is evaluated again."""
        run = self.run(run_id)
        info = run.info
        if info.status == FINISHED:
            raise UserError(
                f"run '{run_id}' is already finished (stop reason: {info.stop_reason}); start a new search instead"
            )
        if info.process_alive:
            raise UserError(f"run '{run_id}' is still running in process {info.pid} on {info.host}; "
                            "wait for it or stop it first")
        if info.status == AWAITING:
            raise UserError(f"run '{run_id}' is waiting for approval of its batch; answer with "
                            f"'collm-nas approve {run_id} --decision approve|edit|reject' (or resume --approve)")
        config = run.config
        if config.llm == "custom" and llm_roles is None:
            raise UserError(f"run '{run_id}' used chat models passed to the API; resume it from Python with "
                            "Workspace.resume(run_id, llm_roles=...)")
        if config.llm in ("endpoint", "local") and llm_roles is None and make_strategy(config.strategy).uses_llm:
            from collm_nas.agents.llm_session import resolve_llm

            resolve_llm(config.llm)  # the run's LLM must still be reachable here; one-line error if not
        components_for(self.store_url, run_id, config, self.table_path)
        require_backend(config.backend)
        _prepare(components_for(self.store_url, run_id, config, self.table_path).evaluator)
        with self._checkpointer() as saver:
            snapshot = build_graph(saver).get_state({"configurable": {"thread_id": run_id}})
        if not snapshot.values:
            graph_input: dict | None = {"run_id": run_id, "config": config.model_dump(mode="json"), "round": 0,
                                        "evaluated": 0, "memory": {}, "best": None, "stop_reason": None}
        elif snapshot.tasks:
            # Tasks remain (``next`` alone is not enough: a task whose writes were
            # saved just before the interruption is listed in ``tasks`` only).
            graph_input = None
        else:  # the graph ended but the process died before the status was written
            self.store.set_status(run_id, FINISHED, snapshot.values.get("stop_reason"))
            return self.result(run_id)
        return self._drive(run_id, config, graph_input, on_progress, llm_roles, seen=info.updated_at)

    def result(self, run_id: str, seconds: float = 0.0) -> SearchResult:
        run = self.run(run_id)
        comps = components_for(self.store_url, run_id, run.config, self.table_path)
        trials = comps.history.trials()
        best = comps.history.best()
        return SearchResult(
            run_id=run_id,
            status=run.status,
            stop_reason=run.info.stop_reason,
            evaluations=len(trials),
            budget=run.config.budget,
            best=best,
            found_at=next((i + 1 for i, t in enumerate(trials) if best and t.ncode == best.ncode), None),
            searched_metric=comps.evaluator.searched_metric,
            reported_metric=comps.evaluator.reported_metric,
            metric_note=comps.evaluator.metric_note,
            seconds=seconds,
            config=run.info.config,
        )

    # -------------------------------------------------------------- plumbing
    @contextmanager
    def _llm(self, config: RunConfig, llm_roles: "LLMRoles | None", log_path: Path) -> Iterator["LLMRoles | None"]:
        if not make_strategy(config.strategy).uses_llm or config.llm == "none":
            yield None
        elif llm_roles is not None:
            yield llm_roles
        else:
            from collm_nas.agents.llm_session import open_llm

            log_path.parent.mkdir(parents=True, exist_ok=True)
            roles_needed = make_strategy(config.strategy).llm_roles
            with open_llm(config.llm, config.llm_options, log_path=log_path, roles=roles_needed) as roles:
                yield roles

    def _new_run_id(self, config: RunConfig) -> str:
        return make_run_id(config.strategy, run_label(config.evaluator, config.space, config.dataset))

    def _checkpointer(self) -> "_Saver":
        return _Saver(self.store_url)

    def _drive(self, run_id: str, config: RunConfig, graph_input: dict | None,
               on_progress: ProgressFn | None, llm_roles: "LLMRoles | None" = None, *,
               seen: float | None = None) -> SearchResult:
        started = time.perf_counter()
        # One writer per run: a second process is refused here, and so is one that decided to go on
        # from a state (``seen``: the run's updated_at it read) that another process has changed since.
        self.store.claim(run_id, seen=seen)
        run_config = {"configurable": {"thread_id": run_id}, "recursion_limit": 8 * config.budget + 50}
        log_path = self.runs_dir / "logs" / f"{run_id}.llm-server.log"
        try:
            with self._checkpointer() as saver, self._llm(config, llm_roles, log_path) as roles:
                context = SearchContext(db_path=self.store_url, table_path=self.table_path, llm=roles)
                if roles is not None and on_progress is not None:
                    on_progress({"event": "llm", "source": roles.source, "roles": roles.describe()})
                graph = build_graph(saver)
                for event in graph.stream(graph_input, run_config, context=context, stream_mode="custom",
                                          durability="sync"):
                    if on_progress is not None:
                        on_progress(event)
        except KeyboardInterrupt:
            self.store.set_status(run_id, INTERRUPTED, "interrupted")
            raise
        except UserError:
            self.store.set_status(run_id, INTERRUPTED)
            raise
        except Exception as e:
            self.store.set_status(run_id, FAILED, f"error: {type(e).__name__}: {e}")
            raise
        finally:  # worker processes (or a Ray started for the run) do not outlive the call
            self._evaluator(run_id, config).close()
        pending = self.pending_approval(run_id)
        if pending is not None:  # paused at the approval gate: nobody is running it now
            self.store.set_status(run_id, AWAITING)
            if on_progress is not None:
                on_progress({"event": "approval", "run_id": run_id, "round": pending["round"], "pause": pending})
            return self.result(run_id, seconds=time.perf_counter() - started)
        self._evaluator(run_id, config).clear_spool()  # finished: nothing is waiting to be stored
        self.store.release(run_id)  # (the finish node's status already did; a no-op then)
        return self.result(run_id, seconds=time.perf_counter() - started)

    # ------------------------------------------------------------- streaming
    def iter_search(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
        """:meth:`search` as a stream of progress events (``round``, ``warning``, ``approval``, ...);
        the last one is ``{"event": "result", "result": SearchResult}``.

        Leaving the loop early stops the search after the evaluation in flight; it stays resumable.
        """
        return self._iterate(self.search, kwargs)

    def iter_resume(self, run_id: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
        """:meth:`resume` as a stream of progress events (see :meth:`iter_search`)."""
        return self._iterate(self.resume, {"run_id": run_id, **kwargs})

    def iter_approve(self, run_id: str, decision: str | dict[str, Any] = "approve",
                     **kwargs: Any) -> Iterator[dict[str, Any]]:
        """:meth:`approve` as a stream of progress events (see :meth:`iter_search`)."""
        return self._iterate(self.approve, {"run_id": run_id, "decision": decision, **kwargs})

    @staticmethod
    def _iterate(call: Callable[..., SearchResult], kwargs: dict[str, Any]) -> Iterator[dict[str, Any]]:
        if "on_progress" in kwargs:
            raise UserError("iter_* methods return the progress events themselves; drop on_progress")
        events: queue.Queue = queue.Queue(maxsize=1)  # the search runs at most an event ahead of the reader
        stop = threading.Event()
        done = object()

        def on_progress(event: dict[str, Any]) -> None:
            if stop.is_set():
                raise SearchStopped("the caller stopped reading the search's events")
            events.put(event)

        def work() -> None:
            try:
                events.put({"event": "result", "result": call(**kwargs, on_progress=on_progress)})
            except BaseException as e:  # handed to the reader, raised there
                events.put(e)
            finally:
                events.put(done)

        worker = threading.Thread(target=work, name="collm-nas-search", daemon=True)
        worker.start()
        try:
            while True:
                item = events.get()
                if item is done:
                    return
                if isinstance(item, SearchStopped):
                    continue
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            while worker.is_alive():  # let the search stop at its next event, draining what it sends
                try:
                    events.get(timeout=0.1)
                except queue.Empty:
                    pass

    # ----------------------------------------------------------- time travel
    def history(self, run_id: str) -> list[dict[str, Any]]:
        """The run's checkpoints by round: the state at the end of each completed round (round 0: the start)."""
        self.run(run_id)
        by_round: dict[int, Any] = {}
        with self._checkpointer() as saver:
            for snap in build_graph(saver).get_state_history({"configurable": {"thread_id": run_id}}):
                values = snap.values or {}
                if "round" not in values or snap.next not in ((NAVIGATOR,), (FINISH_NODE,), ()):
                    continue
                if snap.next == (NAVIGATOR,) or values["round"] not in by_round:
                    # newest first: keep the latest checkpoint that ends the round
                    by_round.setdefault(values["round"], snap)
        out = []
        for round_no in sorted(by_round):
            snap = by_round[round_no]
            best = snap.values.get("best") or {}
            out.append({
                "round": round_no,
                "checkpoint_id": snap.config["configurable"]["checkpoint_id"],
                "evaluated": snap.values.get("evaluated", 0),
                "best_ncode": best.get("ncode"),
                "best_value": best.get("value"),
                "next": list(snap.next),
                "created_at": snap.created_at,
                "strategy": (snap.values.get("strategy") or {}).get("summary"),
            })
        return out

    def fork(self, run_id: str, round: int, *, new_run_id: str | None = None, strategy: str | None = None,
             budget: int | None = None, start: bool = True, on_progress: ProgressFn | None = None,
             llm_roles: "LLMRoles | None" = None) -> SearchResult:
        """A new run that starts from ``run_id`` as it stood at the end of ``round``.

        The fork gets its own copies of the parent's trials and round figures up to
        that round and its own checkpoint thread; the parent is only read. A
        different ``strategy`` or a larger ``budget`` may be given (the
        Navigator's memory is dropped when the strategy changes). With
        ``start=False`` the fork is created and left resumable.
        """
        parent = self.run(run_id)
        points = {h["round"]: h for h in self.history(run_id)}
        if round not in points:
            rounds = ", ".join(str(r) for r in sorted(points)) or "none"
            raise UserError(f"run '{run_id}' has no completed round {round}; rounds you can fork from: {rounds}")
        with self._checkpointer() as saver:
            graph = build_graph(saver)
            point = graph.get_state({"configurable": {"thread_id": run_id,
                                                      "checkpoint_id": points[round]["checkpoint_id"]}})
        values = json.loads(json.dumps(point.values))  # a deep copy: nothing shared with the parent
        config = parent.config.model_copy(deep=True)
        if strategy is not None:
            make_strategy(strategy)  # unknown strategy: one-line error
            config.strategy = strategy
        if budget is not None:
            config.budget = budget
        evaluated = int(values.get("evaluated", 0))
        if config.budget <= evaluated:
            raise UserError(f"the fork starts with {evaluated} evaluations at round {round}; give a budget "
                            f"above that (--budget), now {config.budget}")
        config.parent = {"run_id": run_id, "round": round}
        new_run_id = new_run_id or f"{run_id[:80]}-fork-r{round}-{secrets.token_hex(2)}"
        if not _RUN_ID.match(new_run_id):
            raise UserError(f"bad run id '{new_run_id}'; use letters, digits, '.', '_' and '-' (at most 100)")
        if self.store.get_run(new_run_id) is not None:
            raise UserError(f"run '{new_run_id}' already exists; pick another --run-id")
        if config.llm in ("endpoint", "local") and llm_roles is None and make_strategy(config.strategy).uses_llm:
            from collm_nas.agents.llm_session import resolve_llm

            resolve_llm(config.llm)
        components_for(self.store_url, new_run_id, config, self.table_path)  # validates the configuration
        self.store.create_run(new_run_id, config.model_dump(mode="json"))
        for t in self.store.trials(run_id):
            if t.round <= round:
                self.store.add_trial(new_run_id, TrialResult(t.ncode, t.arch, dict(t.metrics), dict(t.cost),
                                                             t.status, t.error), t.round, t.value)
        for figures in self.store.rounds(run_id):
            if figures["round"] <= round:
                self.store.add_round(new_run_id, figures["round"],
                                     {k: v for k, v in figures.items() if k != "round"})
        best = values.get("best") or {}
        self.store.update_summary(new_run_id, best.get("ncode"), best.get("value"))
        values.update(run_id=new_run_id, config=config.model_dump(mode="json"), stop_reason=None,
                      human_comment=None, feedback=None, batch=[], proposals=[])
        if strategy is not None and strategy != parent.config.strategy:
            values["memory"] = {}
        with self._checkpointer() as saver:
            build_graph(saver).update_state({"configurable": {"thread_id": new_run_id}}, values, as_node=RECORD_NODE)
        self.store.set_status(new_run_id, INTERRUPTED, "forked")
        if not start:
            return self.result(new_run_id)
        return self._drive(new_run_id, config, None, on_progress, llm_roles)

    # -------------------------------------------------------------- approval
    def pending_approval(self, run_id: str) -> dict[str, Any] | None:
        """What the run's approval pause shows (batch, strategy, costs, budget left), or None when not paused."""
        self.run(run_id)  # unknown run: one-line error
        with self._checkpointer() as saver:
            snapshot = build_graph(saver).get_state({"configurable": {"thread_id": run_id}})
        for interrupt in getattr(snapshot, "interrupts", ()) or ():
            value = getattr(interrupt, "value", None)
            if isinstance(value, dict) and value.get("kind") == "approval":
                return value
        return None

    def approve(self, run_id: str, decision: str | dict[str, Any] = "approve", *, drop: Sequence[str] = (),
                add: Sequence[str] = (), comment: str | None = None, on_progress: ProgressFn | None = None,
                llm_roles: "LLMRoles | None" = None) -> SearchResult:
        """Answer a paused run and go on until its end or its next pause.

        ``decision`` is ``approve``, ``edit`` (with ``drop`` and/or ``add``
        codes) or ``reject`` (``comment`` reaches the Navigator's next round);
        a dict reply as the graph takes it is accepted too. A refused edit
        raises a one-line :class:`UserError` and the pause stays open.
        """
        run = self.run(run_id)
        if run.info.process_alive:
            raise UserError(f"run '{run_id}' is being run by process {run.info.pid}; wait for it to pause")
        pending = self.pending_approval(run_id)
        if pending is None:
            raise UserError(f"run '{run_id}' is not waiting for approval (status: {run.info.display_status})")
        raw: Any = dict(decision) if isinstance(decision, dict) else {"action": decision}
        if not isinstance(decision, dict):
            if drop or add:
                raw.update(drop=list(drop), add=list(add))
            if comment:
                raw["comment"] = comment
        reply = parse_reply(raw)
        config = run.config
        comps = components_for(self.store_url, run_id, config, self.table_path)
        if reply.action == "edit":  # refuse before resuming, so a bad edit changes nothing
            apply_edit([c["ncode"] for c in pending["candidates"]], reply, checker=comps.checker,
                       evaluated=comps.history.refresh(), budget_left=pending["budget_left"])
        if config.llm in ("endpoint", "local") and llm_roles is None and make_strategy(config.strategy).uses_llm:
            from collm_nas.agents.llm_session import resolve_llm

            resolve_llm(config.llm)
        require_backend(config.backend)
        return self._drive(run_id, config, Command(resume=reply.to_dict()), on_progress, llm_roles,
                           seen=run.info.updated_at)

    def _evaluator(self, run_id: str, config: RunConfig) -> Any:
        return components_for(self.store_url, run_id, config, self.table_path).evaluator


def _prepare(evaluator: Any) -> None:
    """Let an evaluator check what it needs before a search starts (the train evaluator: its data)."""
    prepare = getattr(evaluator, "prepare", None)
    if callable(prepare):
        prepare()


def _with_supernet_cache(evaluator: str, options: dict[str, Any] | None, runs_dir: Path) -> dict[str, Any]:
    """The run's train options; a supernet run keeps its supernet in ``RUNS_DIR/supernets`` unless told otherwise
    (stored with the run, so a resumed or forked run finds the same file)."""
    options = dict(options or {})
    if evaluator == "supernet" and not options.get("cache_dir"):
        options["cache_dir"] = str((runs_dir / "supernets").expanduser().resolve())
    return options


def run_label(evaluator: str, space: str, dataset: str | None) -> str:
    """What a run id names besides its strategy: the table's dataset, the space and dataset trained on, or the space."""
    if evaluator == "table":
        return dataset or DEFAULT_DATASETS["table"]
    if evaluator in ("train", "supernet", "proxy"):
        from collm_nas.evaluators.datasets import dataset_label

        return f"{Path(space).stem}-{dataset_label(dataset or DEFAULT_DATASETS[evaluator])}"
    return space


def make_run_id(strategy: str, where: str | None) -> str:
    """A fresh, readable run id: ``rea-cifar10-20261122-150512-a3f9``."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(where or "run").stem)[:30]
    return f"{strategy}-{stem}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


class _Saver:
    """The LangGraph checkpointer on the workspace's store: SQLite file or PostgreSQL database."""

    def __init__(self, db_path: str | Path) -> None:
        self.postgres = is_postgres(str(db_path))
        self.db_path = str(db_path) if self.postgres else Path(db_path)

    def __enter__(self) -> Any:
        if self.postgres:
            from collm_nas.graphs.pgstore import postgres_checkpointer

            self._pg = postgres_checkpointer(str(self.db_path))
            return self._pg.__enter__()
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(str(self.db_path), check_same_thread=False, timeout=30)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        saver = SqliteSaver(self.conn)
        saver.setup()
        return saver

    def __exit__(self, *exc: object) -> None:
        if self.postgres:
            self._pg.__exit__(*exc)
            return
        self.conn.close()


def _workspace(runs_dir: str | Path | None, table_path: str | Path | None = None) -> Workspace:
    return Workspace(runs_dir, table_path=table_path)


def search(runs_dir: str | Path | None = None, table_path: str | Path | None = None, **kwargs: Any) -> SearchResult:
    """Start a search in ``runs_dir`` (see :meth:`Workspace.search` for the arguments)."""
    return _workspace(runs_dir, table_path).search(**kwargs)


def resume(run_id: str, runs_dir: str | Path | None = None, table_path: str | Path | None = None,
           on_progress: ProgressFn | None = None) -> SearchResult:
    return _workspace(runs_dir, table_path).resume(run_id, on_progress=on_progress)


def load_run(run_id: str, runs_dir: str | Path | None = None) -> Run:
    return _workspace(runs_dir).run(run_id)


def list_runs(runs_dir: str | Path | None = None) -> list[RunInfo]:
    return _workspace(runs_dir).runs()
