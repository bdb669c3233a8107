"""The Python API: start, resume, approve, fork and read searches.

    from collm_nas import RunConfig, Workspace
    ws = Workspace("runs")
    result = ws.search(RunConfig(strategy="rea", budget=100), seed=1)   # a spec, keyword overrides, or both
    print(result.best.ncode, result.best.metrics)
    for trial in ws.run(result.run_id).trials():
        ...

A :class:`Workspace` is a runs directory: one SQLite file holding the
LangGraph checkpoints (thread id = run id) and the trial store; or, with
``store="postgres://..."`` (``COLLM_NAS_STORE``), a PostgreSQL database
holding both, shared by every machine that names it.

Reading a run (:class:`Run`: trials, rounds, result, LLM figures) needs only
the store, never the run's evaluator or strategy code.
"""

from __future__ import annotations

import json
import queue
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langgraph.types import Command
from pydantic import ValidationError

from collm_nas.agents import STRATEGIES
from collm_nas.core import (AWAITING, FAILED, FINISHED, INTERRUPTED, FrontSummary, Objective, Objectives, RunConfig,
                            RunInfo, Settings, Trial, TrialStore, UserError, load_settings)
from collm_nas.engine.figures import degraded_line, summarise_llm_rounds
from collm_nas.engine.loop import SearchLoop, initial_state
from collm_nas.engine.prepare import check_run_id, open_loop, prepare_run
from collm_nas.backends import require_backend
from collm_nas.graphs.graph import FINISH as FINISH_NODE
from collm_nas.graphs.graph import NAVIGATOR, build_graph
from collm_nas.graphs.graph import RECORD as RECORD_NODE
from collm_nas.graphs.state import SearchContext
from collm_nas.storage import Checkpointer, open_trial_store, parse_store
from collm_nas.storage.history import RunHistory

if TYPE_CHECKING:  # the LLM stack is imported only by runs that use it
    from collm_nas.llm.session import LLMRoles

ProgressFn = Callable[[dict[str, Any]], None]


def spec_from(config: RunConfig | dict[str, Any] | None = None, **overrides: Any) -> RunConfig:
    """A :class:`RunConfig` from a spec (or a dict of its fields) and keyword overrides; one-line errors."""
    base = config.model_dump() if isinstance(config, RunConfig) else dict(config or {})
    try:
        return RunConfig.model_validate({**base, **overrides})
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "spec"
        if err["type"] == "extra_forbidden":
            raise UserError(f"unknown search setting '{where}'; the settings are RunConfig's fields "
                            f"({', '.join(RunConfig.model_fields)})") from None
        got, ctx = err.get("input"), err.get("ctx") or {}
        if err["type"] in ("greater_than_equal", "greater_than") and ("ge" in ctx or "gt" in ctx):
            least = ctx.get("ge", ctx.get("gt"))
            raise UserError(f"{where} must be at least {least}{'' if 'ge' in ctx else ' (exclusive)'}, "
                            f"got {got!r}") from None
        if err["type"] in ("less_than_equal", "less_than") and ("le" in ctx or "lt" in ctx):
            raise UserError(f"{where} must be at most {ctx.get('le', ctx.get('lt'))}, got {got!r}") from None
        raise UserError(f"bad search setting {where}: {err['msg']} (got {repr(got)[:80]})") from None


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
    pareto: FrontSummary | None = None  # several objectives: the front, its hypervolume and reference
    llm: dict[str, Any] | None = None  # the run's LLM figures (Run.llm_summary); None for LLM-free runs

    @property
    def degraded(self) -> str | None:
        """One line when the run's LLM answered fewer rounds than were meant for it (None: all, or no LLM)."""
        return degraded_line(self.llm, self.config.get("fallback"))

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
            **(front_dict(self.pareto) if self.pareto is not None else {}),
            **({"llm": self.llm, "degraded": self.degraded} if self.llm is not None else {}),
        }


def trial_dict(trial: Trial) -> dict[str, Any]:
    return {"ncode": trial.ncode, "arch": trial.arch, "round": trial.round, "metrics": trial.metrics}


def front_dict(front: FrontSummary) -> dict[str, Any]:
    """A front as ``show --format json`` and ``search --json`` write it."""
    return {"objectives": front.objectives, "pareto": [trial_dict(t) for t in front.front],
            "hypervolume": front.hypervolume, "hv_reference": list(front.reference or ()) or None,
            "hv_reference_rule": front.reference_rule}


class Run:
    """A stored run: its spec, status, trials and round figures (read from the store alone)."""

    def __init__(self, store: TrialStore, info: RunInfo) -> None:
        self.store = store
        self.info = info

    @property
    def run_id(self) -> str:
        return self.info.run_id

    @property
    def config(self) -> RunConfig:
        return RunConfig.from_stored(self.info.config)

    @property
    def status(self) -> str:
        return self.info.display_status

    @property
    def objective(self) -> Objective:
        config = self.config
        return Objective(config.metric or "value", config.mode)

    @property
    def searched_metric(self) -> str:
        return self.config.metric or "value"

    @property
    def reported_metric(self) -> str:
        config = self.config
        return config.reported_metric or config.metric or "value"

    @property
    def objectives(self) -> Objectives | None:
        """The run's objectives when it searched several (None: one metric)."""
        config = self.config
        return Objectives.parse(config.objectives) if len(config.objectives) > 1 else None

    def pareto(self, reference: Sequence[float] | None = None, *,
               trials: Sequence[Trial] | None = None) -> FrontSummary | None:
        """The Pareto front, its hypervolume against ``reference`` (default: the run's ``hv_reference``, else
        each objective's worst value moved a tenth of its range further); None for a one-objective run.
        ``trials``: the run's trials when the caller holds them already (else they are read)."""
        objectives = self.objectives
        if objectives is None:
            return None
        if reference is None:
            reference = self.config.hv_reference
        return objectives.summary(list(self.store.trials(self.run_id) if trials is None else trials), reference)

    def trials(self, top: int | None = None, *, after_seq: int = 0) -> list[Trial]:
        """Trials in evaluation order, or the ``top`` best by the searched metric; ``after_seq``: only those
        recorded after the trial with that ``seq`` (a reader that keeps what it read asks only for the new)."""
        trials = self.store.trials(self.run_id, after_seq=after_seq)
        if top is None:
            return trials
        return self.objective.ranked(trials)[:top]

    def best(self) -> Trial | None:
        return self.objective.best(self.store.trials(self.run_id))

    def rounds(self, after_round: int = 0) -> list[dict[str, Any]]:
        """The round figures in round order (only those numbered above ``after_round``)."""
        return self.store.rounds(self.run_id, after_round)

    def llm_summary(self, rounds: Sequence[dict[str, Any]] | None = None) -> dict[str, Any] | None:
        """The run's LLM figures over all rounds (None for LLM-free runs); ``rounds``: all its round figures
        when the caller holds them already (else they are read)."""
        return summarise_llm_rounds(self.rounds() if rounds is None else rounds)

    def result(self, seconds: float = 0.0, *, trials: Sequence[Trial] | None = None,
               rounds: Sequence[dict[str, Any]] | None = None) -> SearchResult:
        """How the run stands; ``trials`` / ``rounds``: all its trials / round figures when the caller holds them
        already (else they are read)."""
        trials = list(self.store.trials(self.run_id) if trials is None else trials)
        best = self.objective.best(trials)
        config = self.config
        return SearchResult(
            run_id=self.run_id,
            status=self.status,
            stop_reason=self.info.stop_reason,
            evaluations=len(trials),
            budget=config.budget,
            best=best,
            found_at=next((i + 1 for i, t in enumerate(trials) if best and t.ncode == best.ncode), None),
            searched_metric=self.searched_metric,
            reported_metric=self.reported_metric,
            metric_note=config.metric_note or "",
            seconds=seconds,
            config=self.info.config,
            pareto=self.pareto(trials=trials),
            llm=self.llm_summary(rounds),
        )


class SearchStopped(KeyboardInterrupt):
    """Raised inside a search whose event stream the caller stopped reading (the run stays resumable)."""


class AnswerRefused(UserError):
    """An answer to an approval pause that cannot be taken now: the run is not paused (any more), another
    answer was taken first, or another process runs it. (A malformed reply is a plain :class:`UserError`.)"""


class BackgroundSearch:
    """A run answered with :meth:`Workspace.approve_in_background` and going on without the caller.

    Either a thread of this process drives it (holding the run's one-writer claim) until its next pause or
    its end, or the LangGraph server that hosts it took the answer (``hosted_by``: its address). The
    thread outlives whoever asked; :meth:`stop` ends it once the step in flight (a batch being evaluated)
    is done; the run stays resumable.
    """

    def __init__(self, run_id: str, reply: dict[str, Any], hosted_by: str | None = None) -> None:
        self.run_id = run_id
        self.reply = reply
        self.hosted_by = hosted_by
        self.result: SearchResult | None = None
        self.error: BaseException | None = None
        self.started_at = time.time()
        self.thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._done = threading.Event()
        if hosted_by is not None:
            self._done.set()

    @property
    def running(self) -> bool:
        return not self._done.is_set()

    def wait(self, timeout: float | None = None) -> SearchResult | None:
        """The result once the run paused again or ended (None if ``timeout`` passed, or when hosted)."""
        self._done.wait(timeout)
        if self.error is not None and not isinstance(self.error, SearchStopped):
            raise self.error
        return self.result

    def stop(self, timeout: float | None = None) -> bool:
        """Stop the run at its next event (once the step in flight is done); True when it has stopped."""
        self._stop.set()
        return self._done.wait(timeout)

    def _progress(self, forward: ProgressFn | None) -> ProgressFn:
        def on_progress(event: dict[str, Any]) -> None:
            if self._stop.is_set():
                raise SearchStopped(f"run '{self.run_id}' was stopped")
            if forward is not None:
                forward(event)

        return on_progress

    def _run(self, drive: Callable[[ProgressFn], SearchResult], forward: ProgressFn | None) -> None:
        def work() -> None:
            try:
                self.result = drive(self._progress(forward))
            except BaseException as e:  # kept for whoever looks; the run's status says it too
                self.error = e
            finally:
                self._done.set()

        # A daemon: a process that is made to quit does not wait for the run, which stays resumable.
        self.thread = threading.Thread(target=work, name=f"collm-nas-run-{self.run_id}", daemon=True)
        self.thread.start()


@dataclass
class _Answer:
    """An answer checked against the pause it answers, ready to be applied."""

    run: Run
    reply: Any  # engine.approval.Reply
    loop: SearchLoop | None  # None when a LangGraph server hosts the run
    host: dict[str, Any] | None


class Workspace:
    """A runs directory (or a PostgreSQL store): start, resume, approve, fork, list and read searches."""

    def __init__(self, runs_dir: str | Path | None = None, *, settings: Settings | None = None,
                 table_path: str | Path | None = None, store: str | None = None) -> None:
        self.settings = settings or load_settings()
        # ``store`` (else COLLM_NAS_STORE): a postgres:// URL shared by a team, or a SQLite file;
        # by default collm-nas.db in the runs folder.
        locator = parse_store(self.settings.store_url(runs_dir, store))
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
        # This workspace's own store (thread-safe), closed by close() or on leaving ``with Workspace(...)``.
        self.store: TrialStore = open_trial_store(self.store_url)

    def close(self) -> None:
        """Close the workspace's store (runs it started in background threads should have ended first)."""
        self.store.close()

    def __enter__(self) -> "Workspace":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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

    def result(self, run_id: str, seconds: float = 0.0) -> SearchResult:
        return self.run(run_id).result(seconds)

    # --------------------------------------------------------------- running
    def search(self, config: RunConfig | dict[str, Any] | None = None, *, run_id: str | None = None,
               on_progress: ProgressFn | None = None, llm_roles: "LLMRoles | None" = None,
               **overrides: Any) -> SearchResult:
        """Start a new search and run it to its end (budget, target, patience, exhausted space) or its first pause.

        ``config`` is a :class:`RunConfig` (or a dict of its fields); keyword
        ``overrides`` set fields by name (``strategy="rea", budget=100, ...``).
        See :class:`RunConfig` for every field: ``evaluator`` (``table``,
        ``train``, ``supernet``, ``proxy`` or ``module:attribute``),
        ``strategy`` (a registered name or ``module:attribute``), ``llm``
        (``auto``, ``endpoint``, ``local``, ``none``; ``llm_roles`` passes your
        own LangChain chat models), ``approval`` (``never``, ``every_round``,
        ``over_cost``: the call returns with status ``awaiting approval``, and
        :meth:`pending_approval` / :meth:`approve` go on), ``backend`` and
        ``workers``...
        """
        spec = spec_from(config, **overrides)
        prepared = prepare_run(spec, store=self.store, locator=self.store_url, settings=self.settings,
                               table_path=self.table_path, run_id=run_id, runs_dir=self.runs_dir,
                               custom_llm=llm_roles is not None)
        if prepared.note and on_progress is not None:
            on_progress({"event": "warning", "round": 0, "message": prepared.note})
        return self._drive(prepared.run_id, prepared.config, initial_state(prepared.run_id), on_progress, llm_roles,
                           loop=prepared.loop)

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
        self._check_llm(run_id, config, llm_roles)
        loop = self._loop(run_id, config)
        require_backend(config.backend or "serial")
        loop.evaluator.prepare()
        with Checkpointer(self.store_url) as saver:
            snapshot = build_graph(saver).get_state({"configurable": {"thread_id": run_id}})
        if not snapshot.values:
            graph_input: dict | None = initial_state(run_id)
        elif snapshot.tasks:
            # Tasks remain (``next`` alone is not enough: a task whose writes were
            # saved just before the interruption is listed in ``tasks`` only).
            graph_input = None
        else:  # the graph ended but the process died before the status was written
            self.store.set_status(run_id, FINISHED, snapshot.values.get("stop_reason"))
            return self.result(run_id)
        return self._drive(run_id, config, graph_input, on_progress, llm_roles, seen=info.updated_at, loop=loop)

    # -------------------------------------------------------------- plumbing
    def _loop(self, run_id: str, config: RunConfig) -> SearchLoop:
        return open_loop(run_id, config, self.store, self.store_url, self.table_path)

    def _check_llm(self, run_id: str, config: RunConfig, llm_roles: "LLMRoles | None") -> None:
        """The run's LLM must still be reachable here; one-line error if not."""
        if not STRATEGIES.resolve(config.strategy).uses_llm:
            return
        if config.llm == "custom" and llm_roles is None:
            raise UserError(f"run '{run_id}' used chat models passed to the API; go on from Python with "
                            "llm_roles=... (Workspace.resume / approve / fork)")
        if config.llm in ("endpoint", "local") and llm_roles is None:
            from collm_nas.llm.session import resolve_llm

            resolve_llm(config.llm)

    @contextmanager
    def _llm(self, config: RunConfig, llm_roles: "LLMRoles | None", log_path: Path) -> Iterator["LLMRoles | None"]:
        strategy = STRATEGIES.resolve(config.strategy)
        if not strategy.uses_llm or config.llm == "none":
            yield None
        elif llm_roles is not None:
            yield llm_roles
        else:
            from collm_nas.llm.session import open_llm

            log_path.parent.mkdir(parents=True, exist_ok=True)
            with open_llm(config.llm, config.role_options(), log_path=log_path, roles=strategy.llm_roles) as roles:
                yield roles

    def _claim(self, run_id: str, seen: float | None) -> None:
        """Make this process (and in it, the caller's thread) the run's only writer, or refuse in one line.

        One writer per run: a second process is refused by the store, and so is one that decided to go on
        from a state (``seen``: the run's updated_at it read) that another process has changed since; a
        second thread of this process is refused here (the store cannot tell two threads apart).
        """
        with _driving_lock:
            if run_id in _driving:
                raise AnswerRefused(f"run '{run_id}' is already going on in this process (an earlier command or "
                                    "answer took it); wait for its next pause or its end")
            _driving.add(run_id)
        try:
            self.store.claim(run_id, seen=seen)
        except BaseException:
            with _driving_lock:
                _driving.discard(run_id)
                _driving_lock.notify_all()
            raise

    def _drive(self, run_id: str, config: RunConfig, graph_input: Any, on_progress: ProgressFn | None,
               llm_roles: "LLMRoles | None" = None, *, seen: float | None = None,
               loop: SearchLoop | None = None, claimed: bool = False) -> SearchResult:
        if not claimed:
            try:
                self._claim(run_id, seen)
            except BaseException:
                if loop is not None:
                    loop.close()
                raise
        try:
            return self._drive_claimed(run_id, config, graph_input, on_progress, llm_roles, loop)
        finally:
            with _driving_lock:
                _driving.discard(run_id)
                _driving_lock.notify_all()

    def _drive_claimed(self, run_id: str, config: RunConfig, graph_input: Any, on_progress: ProgressFn | None,
                       llm_roles: "LLMRoles | None", loop: SearchLoop | None) -> SearchResult:
        started = time.perf_counter()
        loop = loop or self._loop(run_id, config)
        run_config = {"configurable": {"thread_id": run_id}, "recursion_limit": 12 * config.budget + 60}
        log_path = self.runs_dir / "logs" / f"{run_id}.llm-server.log"
        keep = self.settings.keep_checkpoints
        try:
            with Checkpointer(self.store_url) as saver, self._llm(config, llm_roles, log_path) as roles:
                loop.use_llm(roles)
                if roles is not None and on_progress is not None:
                    on_progress({"event": "llm", "source": roles.source, "roles": roles.describe(),
                                 "servers": roles.servers()})
                graph = build_graph(saver)
                for event in graph.stream(graph_input, run_config, context=SearchContext(loop=loop),
                                          stream_mode="custom", durability="sync"):
                    if event.get("event") == "round" and event["round"] % PRUNE_EVERY_ROUNDS == 0:
                        self.store.prune_checkpoints(run_id, keep)
                    if on_progress is not None:
                        on_progress(event)
        # (A store that is itself down, or a run another process took over, must not mask the error: the
        # status then stays as it is, and the run stays resumable.)
        except KeyboardInterrupt:
            with suppress(UserError):
                self.store.set_status(run_id, INTERRUPTED, "interrupted")
            raise
        except UserError:
            with suppress(UserError):
                self.store.set_status(run_id, INTERRUPTED)
            raise
        except Exception as e:
            with suppress(UserError):
                self.store.set_status(run_id, FAILED, f"error: {type(e).__name__}: {e}")
            raise
        finally:  # worker processes (or a Ray started for the run) do not outlive the call
            loop.close()
        self.store.prune_checkpoints(run_id, keep)
        pending = self.pending_approval(run_id)
        if pending is not None:  # paused at the approval gate: nobody is running it now
            self.store.set_status(run_id, AWAITING)
            if on_progress is not None:
                on_progress({"event": "approval", "run_id": run_id, "round": pending["round"], "pause": pending})
            return self.result(run_id, seconds=time.perf_counter() - started)
        loop.backend.clear_spool()  # finished: nothing is waiting to be stored
        self.store.release(run_id)  # (the finish node's status already did; a no-op then)
        return self.result(run_id, seconds=time.perf_counter() - started)

    def prune(self, run_id: str, keep_recent: int | None = None) -> Any:
        """Delete the run's old checkpoints: keep each round's last one and the ``keep_recent`` most recent."""
        self.run(run_id)
        keep = self.settings.keep_checkpoints if keep_recent is None else keep_recent
        if keep < 1:
            raise UserError(f"keep at least 1 recent checkpoint, got {keep}")
        return self.store.prune_checkpoints(run_id, keep)

    # ------------------------------------------------------------- streaming
    def iter_search(self, config: RunConfig | dict[str, Any] | None = None, **kwargs: Any) -> Iterator[dict[str, Any]]:
        """:meth:`search` as a stream of progress events (``round``, ``warning``, ``approval``, ...);
        the last one is ``{"event": "result", "result": SearchResult}``.

        Leaving the loop early stops the search after the evaluation in flight; it stays resumable.
        """
        return self._iterate(self.search, {"config": config, **kwargs})

    def iter_resume(self, run_id: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
        """:meth:`resume` as a stream of progress events (see :meth:`iter_search`)."""
        return self._iterate(self.resume, {"run_id": run_id, **kwargs})

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
        with Checkpointer(self.store_url) as saver:
            for snap in build_graph(saver).get_state_history({"configurable": {"thread_id": run_id}}):
                values = snap.values or {}
                if "round" not in values or snap.next not in ((NAVIGATOR,), (FINISH_NODE,), ()):
                    continue
                if values.get("tool_turn"):
                    continue  # a Navigator's tool round, not the end of a round
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
        with Checkpointer(self.store_url) as saver:
            point = build_graph(saver).get_state({"configurable": {"thread_id": run_id,
                                                                   "checkpoint_id": points[round]["checkpoint_id"]}})
        values = json.loads(json.dumps({k: v for k, v in point.values.items() if k != "conversation"}))
        config = parent.config.model_copy(deep=True)
        if strategy is not None:
            STRATEGIES.resolve(strategy)  # unknown strategy: one-line error
            config.strategy = strategy
        if budget is not None:
            config.budget = budget
        evaluated = int(values.get("evaluated", 0))
        if config.budget <= evaluated:
            raise UserError(f"the fork starts with {evaluated} evaluations at round {round}; give a budget "
                            f"above that (--budget), now {config.budget}")
        config.parent = {"run_id": run_id, "round": round}
        new_run_id = check_run_id(new_run_id or f"{run_id[:80]}-fork-r{round}-{secrets.token_hex(2)}")
        if self.store.get_run(new_run_id) is not None:
            raise UserError(f"run '{new_run_id}' already exists; pick another --run-id")
        self._check_llm(new_run_id, config, llm_roles)
        self._loop(new_run_id, config)  # validates the spec before anything is written
        self.store.create_run(new_run_id, config.model_dump(mode="json"))
        for t in self.store.trials(run_id):
            if t.round <= round:
                self.store.add_trial(new_run_id, t)
        for figures in self.store.rounds(run_id):
            if figures["round"] <= round:
                self.store.add_round(new_run_id, figures["round"], {k: v for k, v in figures.items() if k != "round"})
        best = values.get("best") or {}
        self.store.update_summary(new_run_id, best.get("ncode"), best.get("value"))
        values.update(run_id=new_run_id, stop_reason=None, human_comment=None, feedback=None, batch=[],
                      proposals=[], conversation=None, tool_turn=None)
        values.pop("config", None)  # older checkpoints held the spec; it lives in the store now
        if strategy is not None and strategy != parent.config.strategy:
            values["memory"] = {}
        with Checkpointer(self.store_url) as saver:
            build_graph(saver).update_state({"configurable": {"thread_id": new_run_id}}, values, as_node=RECORD_NODE)
        self.store.set_status(new_run_id, INTERRUPTED, "forked")
        if not start:
            return self.result(new_run_id)
        return self._drive(new_run_id, config, None, on_progress, llm_roles)

    # -------------------------------------------------------------- approval
    def pending_approval(self, run_id: str) -> dict[str, Any] | None:
        """What the run's approval pause shows (batch, strategy, costs, budget left), or None when not paused.

        A run paused inside a LangGraph server (Studio) keeps its pause in the trial store; it is shown
        (and :meth:`approve` answers it, through that server) the same way.
        """
        self.run(run_id)  # unknown run: one-line error
        with Checkpointer(self.store_url) as saver:
            snapshot = build_graph(saver).get_state({"configurable": {"thread_id": run_id}})
        for interrupt in snapshot.interrupts or ():
            value = interrupt.value
            if isinstance(value, dict) and value.get("kind") == "approval":
                return value
        notes = self.store.notes(run_id)
        if notes.get("host") and notes.get("pause"):
            return notes["pause"]
        return None

    def _answer_on_server(self, run_id: str, host: dict[str, Any], reply: Any, *, wait: bool = True) -> SearchResult:
        """Resume a run paused inside a LangGraph server with ``reply``, through that server's API (``wait``:
        until the run paused again or ended there; else only until the server took the answer)."""
        url = host.get("url")
        if not url:
            raise UserError(f"run '{run_id}' is paused inside a LangGraph server whose address is unknown; "
                            "answer it in Studio")
        try:
            from langgraph_sdk import get_sync_client
        except ImportError:
            raise UserError(f"run '{run_id}' is paused inside the LangGraph server at {url}; answering it from here "
                            "needs the studio extra: pip install 'collm-nas[studio]'") from None
        started = time.perf_counter()
        client = get_sync_client(url=url)
        send = client.runs.wait if wait else client.runs.create
        try:
            send(host["thread_id"], host.get("assistant_id") or "search", command={"resume": reply.to_dict()},
                 multitask_strategy="reject")
        except Exception as e:  # the server is gone, or refused the answer (another one is being applied)
            raise AnswerRefused(f"the LangGraph server at {url} that runs '{run_id}' did not take the answer "
                                f"({type(e).__name__}: {' '.join(str(e).split())[:200]}); answer it in Studio, "
                                "or start the server again") from None
        return self.result(run_id, seconds=time.perf_counter() - started)

    def _answer(self, run_id: str, decision: str | dict[str, Any], drop: Sequence[str], add: Sequence[str],
                comment: str | None, expect_round: int | None, llm_roles: "LLMRoles | None") -> _Answer:
        """Check an answer against the run's open pause; refuse it in one line, changing nothing."""
        run = self.run(run_id)
        host = self.store.notes(run_id).get("host")
        if run.info.process_alive and not host:
            raise AnswerRefused(f"run '{run_id}' is being run by process {run.info.pid}; wait for it to pause")
        with _driving_lock:
            if run_id in _driving and run.info.status == AWAITING:
                # The thread that drove it here recorded its next pause and is closing the run: wait for it.
                _driving_lock.wait_for(lambda: run_id not in _driving, timeout=UNWIND_WAIT_S)
                run = self.run(run_id)
            if run_id in _driving and run.info.status == FINISHED:
                raise AnswerRefused(f"run '{run_id}' is not waiting for approval (status: {run.info.display_status})")
            if run_id in _driving:
                raise AnswerRefused(f"run '{run_id}' is already going on in this process (an earlier answer was "
                                    "taken); wait for its next pause")
        pending = self.pending_approval(run_id)
        if pending is None:
            raise AnswerRefused(f"run '{run_id}' is not waiting for approval (status: {run.info.display_status})")
        if expect_round is not None and pending["round"] != expect_round:
            raise AnswerRefused(f"the pause of round {expect_round} of run '{run_id}' was answered already; the run "
                                f"now waits at round {pending['round']}: look at that batch first")
        raw: Any = dict(decision) if isinstance(decision, dict) else {"action": decision}
        if not isinstance(decision, dict):
            if drop or add:
                raw.update(drop=list(drop), add=list(add))
            if comment:
                raw["comment"] = comment
        config = run.config
        loop = self._loop(run_id, config)
        from collm_nas.engine.approval import Pause

        try:
            batch = [c["ncode"] for c in pending["candidates"]]
            # Refuse a bad reply before resuming, so it changes nothing.
            reply = loop.check_reply(Pause(pending, batch, pending["evaluated"]), raw)
            if host and self.store.notes(run_id).get("pause") == pending:  # paused inside a LangGraph server
                loop.close()
                return _Answer(run, reply, None, host)
            self._check_llm(run_id, config, llm_roles)
            require_backend(config.backend or "serial")
        except BaseException:
            loop.close()
            raise
        return _Answer(run, reply, loop, None)

    def approve(self, run_id: str, decision: str | dict[str, Any] = "approve", *, drop: Sequence[str] = (),
                add: Sequence[str] = (), comment: str | None = None, expect_round: int | None = None,
                on_progress: ProgressFn | None = None, llm_roles: "LLMRoles | None" = None) -> SearchResult:
        """Answer a paused run and go on until its end or its next pause.

        ``decision`` is ``approve``, ``edit`` (with ``drop`` and/or ``add``
        codes) or ``reject`` (``comment`` reaches the Navigator's next round);
        a dict reply as the graph takes it is accepted too (ours, or LangChain's
        ``{"decisions": [...]}``). A refused edit raises a one-line
        :class:`UserError` and the pause stays open. ``expect_round``: the
        round of the pause being answered; an answer meant for a pause that
        was answered already is refused (:class:`AnswerRefused`), never applied
        to the next one.
        """
        answer = self._answer(run_id, decision, drop, add, comment, expect_round, llm_roles)
        if answer.host is not None:
            return self._answer_on_server(run_id, answer.host, answer.reply)
        return self._drive(run_id, answer.run.config, Command(resume=answer.reply.to_dict()), on_progress, llm_roles,
                           seen=answer.run.info.updated_at, loop=answer.loop)

    def check_answer(self, run_id: str, decision: str | dict[str, Any] = "approve", *, drop: Sequence[str] = (),
                     add: Sequence[str] = (), comment: str | None = None,
                     expect_round: int | None = None) -> dict[str, Any]:
        """Whether :meth:`approve` would take this answer now, taking nothing: the reply as it would be
        applied; a refusal raises what :meth:`approve` would raise (the checker's reason for a bad edit)."""
        answer = self._answer(run_id, decision, drop, add, comment, expect_round, None)
        if answer.loop is not None:
            answer.loop.close()
        return answer.reply.to_dict()

    def approve_in_background(self, run_id: str, decision: str | dict[str, Any] = "approve", *,
                              drop: Sequence[str] = (), add: Sequence[str] = (), comment: str | None = None,
                              expect_round: int | None = None, on_progress: ProgressFn | None = None,
                              llm_roles: "LLMRoles | None" = None) -> BackgroundSearch:
        """:meth:`approve`, returning as soon as the answer is taken (what the dashboard does).

        Everything that can refuse the answer happens before this returns — the reply checked against the
        pause, the run claimed for this process (one writer: a second answer is refused) — then a thread
        of this process goes on with the run until its next pause or its end. A run hosted by a LangGraph
        server goes on there.
        """
        answer = self._answer(run_id, decision, drop, add, comment, expect_round, llm_roles)
        if answer.host is not None:
            self._answer_on_server(run_id, answer.host, answer.reply, wait=False)
            return BackgroundSearch(run_id, answer.reply.to_dict(), hosted_by=answer.host.get("url"))
        try:
            self._claim(run_id, seen=answer.run.info.updated_at)
        except UserError as e:
            answer.loop.close()
            raise AnswerRefused(str(e)) from None
        except BaseException:
            answer.loop.close()
            raise
        handle = BackgroundSearch(run_id, answer.reply.to_dict())
        config = answer.run.config
        handle._run(lambda progress: self._drive(run_id, config, Command(resume=answer.reply.to_dict()), progress,
                                                 llm_roles, loop=answer.loop, claimed=True), on_progress)
        return handle


# Checkpoints are pruned as a run goes on, every this many rounds (and when it stops).
PRUNE_EVERY_ROUNDS = 25
# Runs a thread of this process is driving now, whichever Workspace object started them: the store's claim
# (one writer per run) tells processes apart, not threads, so this one set is process-wide by necessity.
_driving: set[str] = set()
_driving_lock = threading.Condition()  # notified whenever a run leaves _driving
# A thread that recorded its run's next pause is still closing the run (its engine, its LLM server); an answer
# that arrives then waits up to this long for it instead of being refused.
UNWIND_WAIT_S = 60.0


def _workspace(runs_dir: str | Path | None, table_path: str | Path | None = None) -> Workspace:
    return Workspace(runs_dir, table_path=table_path)


def search(config: RunConfig | dict[str, Any] | None = None, *, runs_dir: str | Path | None = None,
           table_path: str | Path | None = None, **kwargs: Any) -> SearchResult:
    """Start a search in ``runs_dir`` (see :meth:`Workspace.search` for the arguments)."""
    with _workspace(runs_dir, table_path) as ws:
        return ws.search(config, **kwargs)


def resume(run_id: str, runs_dir: str | Path | None = None, table_path: str | Path | None = None,
           on_progress: ProgressFn | None = None) -> SearchResult:
    with _workspace(runs_dir, table_path) as ws:
        return ws.resume(run_id, on_progress=on_progress)


def load_run(run_id: str, runs_dir: str | Path | None = None) -> Run:
    """A stored run, read lazily: its workspace's store stays open while the :class:`Run` is in use."""
    return _workspace(runs_dir).run(run_id)


def list_runs(runs_dir: str | Path | None = None) -> list[RunInfo]:
    with _workspace(runs_dir) as ws:
        return ws.runs()


__all__ = ["AnswerRefused", "BackgroundSearch", "Run", "RunHistory", "SearchResult", "SearchStopped", "Workspace",
           "list_runs", "load_run", "resume", "search", "spec_from"]
