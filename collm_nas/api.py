"""The Python API: start, resume and inspect searches.

    from collm_nas import Workspace
    ws = Workspace("runs")
    result = ws.search(space="nb201", dataset="cifar10", strategy="rea", budget=100, seed=0)
    print(result.best.ncode, result.best.metrics)
    for trial in ws.run(result.run_id).trials():
        ...

A :class:`Workspace` is a runs directory: one SQLite file holding the
LangGraph checkpoints (thread id = run id) and the trial store.
"""

from __future__ import annotations

import re
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langgraph.checkpoint.sqlite import SqliteSaver

from collm_nas.agents import Trial, make_strategy
from collm_nas.errors import UserError
from collm_nas.graphs.components import components_for, open_store
from collm_nas.graphs.graph import build_graph
from collm_nas.graphs.state import RunConfig, SearchContext
from collm_nas.graphs.store import ACTIVE, FAILED, FINISHED, INTERRUPTED, RunInfo, TrialStore
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
        "fallback_rounds": sum(1 for r in llm_rounds if r["llm"]["calls"] == 0 or r["llm"]["failed_calls"]),
        "proposed": proposed,
        "illegal": total("illegal"),
        "duplicates": total("duplicates"),
        "accepted": total("accepted"),
        "topped_up": total("topped_up"),
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


class Workspace:
    """A runs directory: start, resume, list and read searches."""

    def __init__(self, runs_dir: str | Path | None = None, *, settings: Settings | None = None,
                 table_path: str | Path | None = None) -> None:
        self.settings = settings or load_settings()
        self.db_path = self.settings.db_path(runs_dir)
        self.table_path = self.settings.table_path(table_path)
        self.store: TrialStore = open_store(str(self.db_path))

    # --------------------------------------------------------------- reading
    def runs(self) -> list[RunInfo]:
        return self.store.list_runs()

    def run(self, run_id: str) -> Run:
        info = self.store.get_run(run_id)
        if info is None:
            raise UserError(f"unknown run '{run_id}'; 'collm-nas runs' lists the runs in {self.db_path.parent}")
        return Run(self.store, info)

    # --------------------------------------------------------------- running
    def search(
        self,
        *,
        space: str = "nb201",
        dataset: str | None = "cifar10",
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
    ) -> SearchResult:
        """Start a new search and run it to its end (budget, target, patience, or exhausted space).

        LLM strategies (``collm``) talk to ``llm``: ``auto`` (a configured
        endpoint, else the local model, else none: the LLM-free ``fallback``
        runs and ``on_progress`` gets a warning), ``endpoint``, ``local`` or
        ``none``; ``llm_roles`` passes your own LangChain chat models.
        ``llm_options`` sets role options such as ``{"model": ..., "generator.temperature": 0.2}``.
        """
        definition = None
        if space not in BUILTIN_SPACES and space.lower().endswith((".yaml", ".yml", ".json")):
            definition = load_space_file(space).to_dict()
        config = RunConfig(
            space=space,
            space_definition=definition,
            evaluator=evaluator,
            dataset=dataset,
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
        )
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
        components_for(str(self.db_path), run_id, config, self.table_path)  # validates the whole configuration
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
            raise UserError(f"run '{run_id}' is still running in process {info.pid}; wait for it or stop it first")
        config = run.config
        if config.llm == "custom" and llm_roles is None:
            raise UserError(f"run '{run_id}' used chat models passed to the API; resume it from Python with "
                            "Workspace.resume(run_id, llm_roles=...)")
        if config.llm in ("endpoint", "local") and llm_roles is None and make_strategy(config.strategy).uses_llm:
            from collm_nas.agents.llm_session import resolve_llm

            resolve_llm(config.llm)  # the run's LLM must still be reachable here; one-line error if not
        components_for(str(self.db_path), run_id, config, self.table_path)
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
        return self._drive(run_id, config, graph_input, on_progress, llm_roles)

    def result(self, run_id: str, seconds: float = 0.0) -> SearchResult:
        run = self.run(run_id)
        comps = components_for(str(self.db_path), run_id, run.config, self.table_path)
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
        return make_run_id(config.strategy, config.dataset if config.evaluator == "table" else config.space)

    def _checkpointer(self) -> "_Saver":
        return _Saver(self.db_path)

    def _drive(self, run_id: str, config: RunConfig, graph_input: dict | None,
               on_progress: ProgressFn | None, llm_roles: "LLMRoles | None" = None) -> SearchResult:
        started = time.perf_counter()
        self.store.set_status(run_id, ACTIVE)
        run_config = {"configurable": {"thread_id": run_id}, "recursion_limit": 8 * config.budget + 50}
        log_path = self.db_path.parent / "logs" / f"{run_id}.llm-server.log"
        try:
            with self._checkpointer() as saver, self._llm(config, llm_roles, log_path) as roles:
                context = SearchContext(db_path=str(self.db_path), table_path=self.table_path, llm=roles)
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
        return self.result(run_id, seconds=time.perf_counter() - started)


def make_run_id(strategy: str, where: str | None) -> str:
    """A fresh, readable run id: ``rea-cifar10-20261122-150512-a3f9``."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(where or "run").stem)[:30]
    return f"{strategy}-{stem}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


class _Saver:
    """A LangGraph SQLite checkpointer on the workspace's database file."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path

    def __enter__(self) -> SqliteSaver:
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(str(self.db_path), check_same_thread=False, timeout=30)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        saver = SqliteSaver(self.conn)
        saver.setup()
        return saver

    def __exit__(self, *exc: object) -> None:
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
