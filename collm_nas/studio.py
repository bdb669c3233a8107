"""The search graph as a LangGraph server graph (``langgraph dev``, LangGraph Studio).

``langgraph.json`` at the repository root exposes :data:`graph`. It is the
search loop of :mod:`collm_nas.graphs.graph` behind one more node, ``start``,
and is compiled without a checkpointer: the server brings its own persistence
(thread = one or more runs, checkpoints in the server's store). A person
fills in the typed input (:class:`SearchRequest`: space, dataset, strategy,
budget, seed, approval mode, LLM settings...) and optionally the typed
context (:class:`ServerContext`: runs folder and table path; defaults from
``collm_nas.core.settings``, so an empty context works)::

    start -> navigator -> generator -> coordinator -> approve -> evaluate -> record -> ... -> finish

* ``start`` validates the request into a :class:`RunConfig` (a bad one fails
  the run with one line), creates the run in the trial store (SQLite under
  the runs folder, so ``collm-nas show RUN_ID`` and ``Workspace`` read it) and
  sets up the state. It is idempotent: the run id it picks depends only on
  the task (thread, checkpoint), so a re-run of the node finds its own run.
* the other nodes are the CLI's and Python API's nodes; their runtime
  context (trial store, table, LLM clients) is made here from the server's
  context and the run's state. LLM clients (``llm`` endpoint or local) are
  opened lazily, once per process and setting. :data:`SERVER` holds the
  stores, run engines and LLM clients (:class:`ServerResources`) and closes
  them when the server shuts down (the lifespan of the HTTP app in
  :mod:`collm_nas.studio_app`, which ``langgraph.json`` names) or, outside a
  server, at process exit; the embedded llama.cpp server stops with them.

Progress reaches the server's ``custom`` stream: ``started``, one
``evaluation`` per result, one ``round`` per round (round, evaluations done,
budget, best so far, the strategy's summary), ``warning`` and ``finished``;
the approval pause arrives as an interrupt (see :mod:`collm_nas.engine.approval`).
"""

from __future__ import annotations

import atexit
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any, TypedDict

from langgraph.channels import EphemeralValue
from langgraph.config import get_config, get_stream_writer
from langgraph.errors import GraphInterrupt
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from collm_nas.agents import STRATEGIES
from collm_nas.api import spec_from
from collm_nas.core import AWAITING, RunConfig, UserError, load_settings
from collm_nas.engine.loop import SearchLoop
from collm_nas.engine.prepare import open_loop, prepare_run
from collm_nas.faces import studio_request_model
from collm_nas.graphs.graph import APPROVE, FINISH, NAVIGATOR, add_search_loop
from collm_nas.graphs.state import SearchContext, SearchState
from collm_nas.storage import open_trial_store, parse_store

START_NODE = "start"
REFUSE = "refuse"


# The request's fields live one step in the graph (``start`` reads them), so a later request on the
# same thread starts from the defaults again and the state shows only the run.
_ONCE = EphemeralValue(Any)


class SearchError(UserError, ValueError):
    """A :class:`UserError` raised in the server: the LangGraph server shows a failed run's message only for
    ValueError and a few other types ("An internal error occurred" for the rest)."""


# What a person fills in to start a search (LangGraph Studio renders it as the input form): the run spec's
# Studio fields, generated from RunConfig. ``strategy`` shares the state's channel (where rounds keep their
# Strategy object) and ``run_id`` the state's run id: only a name is a request.
SearchRequest = studio_request_model(_ONCE)
REQUEST_FIELDS = tuple(SearchRequest.model_fields)


class ServerContext(BaseModel):
    """Where this server keeps the trial store and finds the table (empty: the settings' defaults)."""

    model_config = ConfigDict(extra="ignore", title="Server context")

    runs_dir: str | None = Field(None, description="folder of the trial store collm-nas.db (default "
                                 "$COLLM_NAS_RUNS_DIR, else ./runs of the server); $COLLM_NAS_STORE, when set, "
                                 "names the store instead, as for the CLI")
    table_path: str | None = Field(None, description="NAS-Bench-201 table nb201.csv.gz "
                                   "(default $COLLM_NAS_NB201_TABLE, else ../shared/data/nb201.csv.gz)")


class StudioState(SearchState, total=False):
    db_path: str  # the store locator this run writes (kept, so a resume without context finds it)
    table_path: str | None
    started_run_id: str  # the run the last ``start`` made (tells a leftover run_id from a requested one)
    request_error: str | None  # why ``start`` refused the last request (one line)


StartInput = TypedDict(  # type: ignore[misc]  # what ``start`` reads: the state and the request's fields
    "StartInput", {**{k: Any for k in StudioState.__annotations__}, **{k: Any for k in REQUEST_FIELDS}},
    total=False,
)


def _one_line(e: ValidationError) -> str:
    err = e.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "request"
    got = repr(err.get("input"))
    return f"bad search request: {where}: {err['msg']} (got {got if len(got) <= 80 else got[:77] + '...'})"


def parse_request(values: dict[str, Any]) -> BaseModel:
    """The request's fields (None meaning 'default') as a SearchRequest; one-line error if bad."""
    try:
        return SearchRequest.model_validate({k: v for k, v in values.items() if v is not None})
    except ValidationError as e:
        raise UserError(_one_line(e)) from None


def request_spec(request: BaseModel) -> RunConfig:
    """The run spec a request asks for (fields left empty keep the spec's defaults)."""
    given = {k: v for k, v in request.model_dump().items() if k != "run_id" and v is not None}
    return spec_from(**given)


# ------------------------------------------------------------------ places
def _context_dict(context: Any) -> dict[str, Any]:
    if context is None:
        return {}
    if isinstance(context, BaseModel):
        return context.model_dump()
    if isinstance(context, dict):
        return dict(context)
    return {k: getattr(context, k, None) for k in ServerContext.model_fields}


def _places(context: Any, state: dict[str, Any]) -> tuple[str, str]:
    """(store locator, table path): from the context, else what the run started with, else the settings.

    The store is the one the CLI would use: ``$COLLM_NAS_STORE`` when set (a PostgreSQL URL, say), else
    collm-nas.db in the context's runs folder or the settings' one.
    """
    given = _context_dict(context)
    settings = load_settings()
    if given.get("runs_dir") or not state.get("db_path"):
        db_path = settings.store_url(given.get("runs_dir") or None)
        if parse_store(db_path).kind == "sqlite":
            db_path = str(Path(db_path).expanduser().resolve())
    else:
        db_path = state["db_path"]
    if given.get("table_path"):
        table_path = str(Path(settings.table_path(given["table_path"])).resolve())
    else:
        table_path = state.get("table_path") or settings.table_path()
    return db_path, table_path


# ------------------------------------------------------ what the server holds
class ServerResources:
    """What this LangGraph server process holds for its runs, and closes when it shuts down.

    * trial stores, one per store locator;
    * run engines (:class:`SearchLoop`), built once per run: a finished or failed run's is closed at once
      (its workers stop), and at most ``max_loops`` are kept, the least recently used closed first (a run
      left paused or interrupted is rebuilt from its store when it goes on);
    * LLM clients, opened lazily once per setting (the embedded llama.cpp server among them).
    """

    def __init__(self, max_loops: int = 16) -> None:
        self.max_loops = max_loops
        self._lock = threading.RLock()
        self._stores: dict[str, Any] = {}
        self._loops: OrderedDict[tuple[str, str], SearchLoop] = OrderedDict()
        self._llm_open: dict[str, Any] = {}
        self._llm_stack = ExitStack()

    def store(self, locator: str) -> Any:
        with self._lock:
            if locator not in self._stores:
                self._stores[locator] = open_trial_store(locator)
            return self._stores[locator]

    def loop(self, db_path: str, run_id: str, table_path: str | None) -> SearchLoop:
        """The engine of a run this server runs: built once per run, LLM clients opened lazily."""
        key = (db_path, run_id)
        with self._lock:
            loop = self._loops.get(key)
            if loop is None:
                store = self.store(db_path)
                info = store.get_run(run_id)
                if info is None:
                    raise UserError(f"run '{run_id}' is not in the store {store.location}")
                config = RunConfig.from_stored(info.config)
                loop = open_loop(run_id, config, store, db_path, table_path,
                                 llm=lambda: self.llm(config, _log_dir(db_path)))
                self.adopt(db_path, run_id, loop)
            else:
                self._loops.move_to_end(key)
            return loop

    def adopt(self, db_path: str, run_id: str, loop: SearchLoop) -> None:
        """Keep ``loop`` as the engine of ``run_id`` (closing the least recently used beyond the bound)."""
        with self._lock:
            self._loops[(db_path, run_id)] = loop
            self._loops.move_to_end((db_path, run_id))
            while len(self._loops) > self.max_loops:
                _, oldest = self._loops.popitem(last=False)
                oldest.close()

    def drop(self, db_path: str, run_id: str) -> None:
        """Close and forget a run's engine (the run finished or failed here)."""
        with self._lock:
            loop = self._loops.pop((db_path, run_id), None)
        if loop is not None:
            loop.close()

    def held(self) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._loops)

    def llm(self, config: RunConfig, log_dir: Path) -> Any:
        """The LLM roles a run of this server talks to, opened on first use and kept for the process."""
        strategy = STRATEGIES.resolve(config.strategy)
        if not strategy.uses_llm or config.llm == "none":
            return None
        if config.llm not in ("endpoint", "local"):
            raise UserError(f"run needs LLM source '{config.llm}', which a LangGraph server cannot open; "
                            "use llm endpoint or local")
        options = config.role_options()
        key = json.dumps([config.llm, options, list(strategy.llm_roles)], sort_keys=True)
        with self._lock:
            if key not in self._llm_open:
                from collm_nas.llm.session import open_llm

                log_dir.mkdir(parents=True, exist_ok=True)
                log_path = log_dir / f"server-llm-{len(self._llm_open)}.log"
                self._llm_open[key] = self._llm_stack.enter_context(
                    open_llm(config.llm, options, log_path=log_path, roles=strategy.llm_roles))
            return self._llm_open[key]

    def close(self) -> None:
        """Close the engines (their workers stop), the LLM clients (the embedded server stops) and the stores."""
        with self._lock:
            loops, self._loops = list(self._loops.values()), OrderedDict()
            stores, self._stores = list(self._stores.values()), {}
            self._llm_open.clear()
            stack, self._llm_stack = self._llm_stack, ExitStack()
        for loop in loops:
            loop.close()
        stack.close()
        for store in stores:
            store.close()


# The resources of this server process (the LangGraph server imports this module once and serves from it).
SERVER = ServerResources()


def close_server() -> None:
    """Close everything this server process holds for its runs (see :class:`ServerResources`)."""
    SERVER.close()


atexit.register(close_server)


def _log_dir(db_path: str) -> Path:
    if parse_store(db_path).kind == "sqlite":
        return Path(db_path).parent / "logs"
    return load_settings().runs_dir / "logs"


def _host() -> dict[str, Any]:
    """Where this server runs the current thread: what the CLI needs to answer its pause."""
    config = get_config()
    configurable = config.get("configurable") or {}
    metadata = config.get("metadata") or {}
    return {"kind": "langgraph-server", "url": os.environ.get("LANGGRAPH_API_URL") or None,
            "thread_id": configurable.get("thread_id"),
            "assistant_id": configurable.get("assistant_id") or metadata.get("assistant_id") or "search"}


def _paused(loop: SearchLoop, interrupted: GraphInterrupt) -> None:
    """A run paused here for approval: its pause and this server go into the trial store, so the CLI, the API
    and the dashboard can show it and answer it (through this server)."""
    payloads = [i.value for i in (interrupted.args[0] if interrupted.args else ()) if isinstance(i.value, dict)]
    pause = next((p for p in payloads if p.get("kind") == "approval"), None)
    if pause is None:
        return
    loop.store.set_note(loop.run_id, "host", _host())
    loop.store.set_note(loop.run_id, "pause", pause)
    loop.store.set_status(loop.run_id, AWAITING)


def _serve(name: str, node: Callable[..., Any]) -> Callable[..., Any]:
    """``node`` with its runtime context (the run's engine) made from the server's context and the run's state."""

    def served(state: StudioState, runtime: Runtime[ServerContext]) -> dict[str, Any]:
        db_path, table_path = _places(runtime.context, state)
        try:
            loop = SERVER.loop(db_path, state["run_id"], table_path)
            update = node(state, runtime.override(context=SearchContext(loop=loop)))
        except GraphInterrupt as interrupted:
            if name == APPROVE:
                _paused(loop, interrupted)
            raise
        except BaseException as e:  # the run failed or stopped here: its engine (and workers) go
            SERVER.drop(db_path, state["run_id"])
            if isinstance(e, UserError) and not isinstance(e, ValueError):
                raise SearchError(str(e)) from e
            raise
        if name == APPROVE and loop.store.notes(loop.run_id).get("pause") is not None:
            loop.store.set_note(loop.run_id, "pause", None)  # answered: the run goes on here
            loop.store.claim(loop.run_id)
        if name == FINISH:  # the run is over: its workers (process / ray backends) and spool go
            loop.backend.clear_spool()
            SERVER.drop(db_path, state["run_id"])
        return update

    served.__name__ = served.__qualname__ = name
    served.__doc__ = node.__doc__
    return served


# ------------------------------------------------------------------- start
def start(state: StartInput, runtime: Runtime[ServerContext]) -> dict[str, Any]:
    """Validate the request, create the run in the trial store (once) and set up the state.

    A bad request is not raised here but handed to ``refuse``, which fails the run with its one line:
    so this node's writes always land, and the request's fields that share a channel with the state
    (``strategy``, ``run_id``) never linger for the thread's next request.
    """
    try:
        return {**_start(state, runtime), "request_error": None}
    except UserError as e:
        return {"request_error": str(e), "strategy": None, "run_id": state.get("started_run_id")}


def refuse(state: StudioState) -> dict[str, Any]:
    """Fail the run with the request's one-line error."""
    raise SearchError(state.get("request_error") or "bad search request")


def _after_start(state: StudioState) -> str:
    return REFUSE if state.get("request_error") else NAVIGATOR


def _start(state: StartInput, runtime: Runtime[ServerContext]) -> dict[str, Any]:
    fields = {k: state.get(k) for k in REQUEST_FIELDS if k != "run_id"}
    if not isinstance(fields["strategy"], str):
        fields["strategy"] = None  # the previous run's last Strategy object, left in the state: not a request
    spec = request_spec(parse_request(fields))
    asked = state.get("run_id")
    if asked and asked == state.get("started_run_id"):
        asked = None  # the previous run's id, left in the state: not a request
    db_path, table_path = _places(runtime.context, {})
    info = runtime.execution_info
    store = SERVER.store(db_path)
    prepared = prepare_run(spec, store=store, locator=db_path, settings=load_settings(), table_path=table_path,
                           run_id=asked, id_tag=info.task_id if info is not None else "", reuse_empty=True,
                           runs_dir=Path(db_path).parent if parse_store(db_path).kind == "sqlite" else None)
    prepared.loop.use_llm(lambda: SERVER.llm(prepared.config, _log_dir(db_path)))
    SERVER.adopt(db_path, prepared.run_id, prepared.loop)  # the nodes of this run find its engine built
    write = get_stream_writer()
    if prepared.note:
        write({"event": "warning", "round": 0, "message": prepared.note})
    config = prepared.config
    write({"event": "started", "run_id": prepared.run_id, "db_path": store.location, "budget": config.budget,
           "strategy": config.strategy, "approval": config.approval})
    return {"run_id": prepared.run_id, "started_run_id": prepared.run_id, "db_path": db_path,
            "table_path": table_path, "round": 0, "evaluated": 0, "memory": {}, "best": None, "strategy": None,
            "proposals": [], "batch": [], "screening": {}, "feedback": None, "llm_calls": [], "llm_events": [],
            "stop_reason": None, "human_comment": None, "conversation": None, "tool_turn": None}


def build_studio_graph(checkpointer: Any = None):
    """The search graph with a typed input (:class:`SearchRequest`) and context (:class:`ServerContext`)."""
    g = StateGraph(StudioState, context_schema=ServerContext, input_schema=SearchRequest)  # type: ignore[arg-type]
    g.add_node(START_NODE, start)
    add_search_loop(g, wrap=_serve)
    g.add_edge(START, START_NODE)
    g.add_node(REFUSE, refuse)
    g.add_conditional_edges(START_NODE, _after_start, [NAVIGATOR, REFUSE])
    g.add_edge(REFUSE, END)
    return g.compile(checkpointer=checkpointer, name="collm-nas-search")


graph = build_studio_graph()
