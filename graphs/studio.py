"""The search graph as a LangGraph server graph (``langgraph dev``, LangGraph Studio).

``langgraph.json`` at the repository root exposes :data:`graph`. It is the
search loop of :mod:`collm_nas.graphs.graph` behind one more node, ``start``,
and is compiled without a checkpointer: the server brings its own persistence
(thread = one or more runs, checkpoints in the server's store). A person
fills in the typed input (:class:`SearchRequest`: space, dataset, strategy,
budget, seed, approval mode, LLM settings...) and optionally the typed
context (:class:`ServerContext`: runs folder and table path; defaults from
``collm_nas.settings``, so an empty context works)::

    start -> navigator -> generator -> coordinator -> approve -> evaluate -> record -> ... -> finish

* ``start`` validates the request into a :class:`RunConfig` (a bad one fails
  the run with one line), creates the run in the trial store (SQLite under
  the runs folder, so ``collm-nas show RUN_ID`` and ``Workspace`` read it) and
  sets up the state. It is idempotent: the run id it picks depends only on
  the task (thread, checkpoint), so a re-run of the node finds its own run.
* the other nodes are the CLI's and Python API's nodes; their runtime
  context (trial store, table, LLM clients) is made here from the server's
  context and the run's state. LLM clients (``llm`` endpoint or local) are
  opened lazily, once per process and setting; the embedded llama.cpp
  server is stopped when the server shuts down (the lifespan of the HTTP app
  in :mod:`collm_nas.graphs.studio_app`, which ``langgraph.json`` names) or,
  outside a server, at process exit.

Progress reaches the server's ``custom`` stream: ``started``, one
``evaluation`` per result, one ``round`` per round (round, evaluations done,
budget, best so far, the strategy's summary), ``warning`` and ``finished``;
the approval pause arrives as an interrupt (see :mod:`collm_nas.graphs.approval`).
"""

from __future__ import annotations

import atexit
import json
import re
import threading
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated, Any, Literal, TypedDict

from langgraph.channels import EphemeralValue
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from collm_nas.agents import FALLBACKS, STRATEGIES, make_strategy
from collm_nas.errors import UserError
from collm_nas.evaluators import DEFAULT_DATASETS
from collm_nas.evaluators.parallel import require_backend
from collm_nas.graphs.components import components_for, open_store
from collm_nas.graphs.graph import FINISH, NAVIGATOR, add_search_loop
from collm_nas.graphs.state import RunConfig, SearchState
from collm_nas.graphs.store import ACTIVE
from collm_nas.settings import load_settings

START_NODE = "start"
REFUSE = "refuse"
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


# The request's fields live one step in the graph (``start`` reads them), so a later request on the
# same thread starts from the defaults again and the state shows only the run.
_ONCE = EphemeralValue(Any)
Strategies = Literal[tuple(STRATEGIES)]  # type: ignore[valid-type]
Fallbacks = Literal[tuple(FALLBACKS)]  # type: ignore[valid-type]
Approval = Literal["never", "every_round", "over_cost"]
LLMChoice = Literal["auto", "endpoint", "local", "none"]
Decoding = Literal["auto", "grammar", "json_schema", "tools", "text"]


class SearchError(UserError, ValueError):
    """A :class:`UserError` raised in the server: the LangGraph server shows a failed run's message only for
    ValueError and a few other types ("An internal error occurred" for the rest)."""


class SearchRequest(BaseModel):
    """What a person fills in to start a search (LangGraph Studio renders it as the input form)."""

    model_config = ConfigDict(extra="forbid", title="Search request")

    space: Annotated[str, _ONCE] = Field(
        "nb201", description="search space: nb201, mbv3, or the path of a .yaml/.json space file on the server")
    evaluator: Annotated[str, _ONCE] = Field(
        "table", description="table (NAS-Bench-201 results), train (real training), supernet (weights inherited "
        "from a supernet), proxy (zero-cost proxies) or module.path:function")
    dataset: Annotated[str | None, _ONCE] = Field(
        None, description="table: cifar10 (default), cifar100, imagenet16; "
        "train: digits (default), cifar10, cifar100, torchvision:NAME, imagefolder:PATH")
    # Shares the state's strategy channel (where rounds keep their Strategy object): only a name is a request.
    strategy: Strategies = Field(
        "rea", description="random, rea, local (LLM-free); collm, lmsearcher, hybrid (LLM)")
    budget: Annotated[int, _ONCE] = Field(100, ge=1, description="number of architectures to evaluate")
    seed: Annotated[int, _ONCE] = Field(0, description="random seed of the strategy")
    batch_size: Annotated[int | None, _ONCE] = Field(
        None, ge=1, description="architectures per round (default: the strategy's)")
    constraints: Annotated[list[str], _ONCE] = Field(
        default_factory=list, description="e.g. params_mb<=1.0, lat_ms_pixel3<=20")
    target: Annotated[float | None, _ONCE] = Field(
        None, description="stop once the searched metric reaches this value")
    patience: Annotated[int | None, _ONCE] = Field(
        None, ge=1, description="stop after this many rounds without improvement")
    metric: Annotated[str | None, _ONCE] = Field(None, description="searched metric (default: the dataset's)")
    approval: Annotated[Approval, _ONCE] = Field(
        "never", description="pause for a person's approval of each batch: never, every_round, or over_cost "
        "(when the batch's estimated seconds exceed approval_threshold_s)")
    approval_threshold_s: Annotated[float | None, _ONCE] = Field(
        None, ge=0, description="over_cost: estimated evaluation seconds of a batch above which the search pauses")
    llm: Annotated[LLMChoice, _ONCE] = Field(
        "auto", description="where LLM roles run: auto (a configured endpoint, else the local model, else none), "
        "endpoint (COLLM_NAS_LLM_BASE_URL), local (embedded SmolLM2), none (the fallback strategy)")
    llm_model: Annotated[str | None, _ONCE] = Field(
        None, description="model name for every role (default COLLM_NAS_LLM_MODEL)")
    llm_base_url: Annotated[str | None, _ONCE] = Field(
        None, description="OpenAI-compatible endpoint for every role (default COLLM_NAS_LLM_BASE_URL); "
        "API keys come from the server's environment only")
    navigator_model: Annotated[str | None, _ONCE] = Field(None, description="model of the Navigator only")
    generator_model: Annotated[str | None, _ONCE] = Field(None, description="model of the Generator only")
    temperature: Annotated[float | None, _ONCE] = Field(
        None, ge=0, le=2, description="sampling temperature for every role")
    decoding: Annotated[Decoding | None, _ONCE] = Field(None, description="structured-output mode (default auto)")
    fallback: Annotated[Fallbacks, _ONCE] = Field(
        "local", description="LLM-free strategy that tops up short batches and stands in when the LLM fails")
    prior: Annotated[list[str], _ONCE] = Field(
        default_factory=list, description="warm start of the learned ranker: other runs' ids, or table:COLUMN "
        "of another dataset (e.g. table:cifar100_test)")
    train_options: Annotated[dict[str, Any], _ONCE] = Field(
        default_factory=dict, description="train evaluator settings (epochs, lr, channels, data_dir, ...)")
    # Shares the state's run_id channel: ``start`` tells a requested id from the previous run's.
    run_id: str | None = Field(None, description="name of the new run (default: generated)")

    @field_validator("approval", mode="before")
    @classmethod
    def _dashes(cls, value: Any) -> Any:
        return value.replace("-", "_") if isinstance(value, str) else value

    @field_validator("constraints", "prior", mode="before")
    @classmethod
    def _one_string(cls, value: Any) -> Any:  # a form field may send "a, b" instead of a list
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    def llm_options(self) -> dict[str, Any]:
        options = {"base_url": self.llm_base_url, "model": self.llm_model, "navigator.model": self.navigator_model,
                   "generator.model": self.generator_model, "temperature": self.temperature,
                   "decoding": self.decoding}
        return {k: v for k, v in options.items() if v is not None}


REQUEST_FIELDS = tuple(SearchRequest.model_fields)


class ServerContext(BaseModel):
    """Where this server keeps the trial store and finds the table (empty: the settings' defaults)."""

    model_config = ConfigDict(extra="ignore", title="Server context")

    runs_dir: str | None = Field(None, description="folder of the trial store collm-nas.db "
                                 "(default $COLLM_NAS_RUNS_DIR, else ./runs of the server)")
    table_path: str | None = Field(None, description="NAS-Bench-201 table nb201.csv.gz "
                                   "(default $COLLM_NAS_NB201_TABLE, else ../shared/data/nb201.csv.gz)")


class StudioState(SearchState, total=False):
    db_path: str  # the trial store this run writes (kept, so a resume without context finds it)
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


def parse_request(values: dict[str, Any]) -> SearchRequest:
    """The request's fields (None meaning 'default') as a :class:`SearchRequest`; one-line error if bad."""
    try:
        return SearchRequest.model_validate({k: v for k, v in values.items() if v is not None})
    except ValidationError as e:
        raise UserError(_one_line(e)) from None


def run_config(request: SearchRequest, backend: str = "serial", workers: int | None = None,
               ) -> tuple[RunConfig, str | None]:
    """The run's configuration and, when the LLM asked for is not there, a one-line note."""
    from collm_nas.spaces import BUILTIN_SPACES, load_space_file

    definition = None
    if request.space not in BUILTIN_SPACES and request.space.lower().endswith((".yaml", ".yml", ".json")):
        definition = load_space_file(request.space).to_dict()
    if request.approval == "over_cost" and request.approval_threshold_s is None:
        raise UserError("approval over_cost needs a threshold; fill in approval_threshold_s (seconds)")
    config = RunConfig(
        space=request.space, space_definition=definition, evaluator=request.evaluator,
        dataset=request.dataset if request.dataset is not None else DEFAULT_DATASETS.get(request.evaluator, "cifar10"),
        train_options=dict(request.train_options), strategy=request.strategy, budget=request.budget,
        seed=request.seed, batch_size=request.batch_size, constraints=list(request.constraints),
        target=request.target, metric=request.metric, patience=request.patience, fallback=request.fallback,
        prior=list(request.prior), backend=backend, workers=workers, approval=request.approval,
        approval_threshold_s=request.approval_threshold_s,
    )
    note = None
    strategy = make_strategy(request.strategy)
    if strategy.uses_llm:
        from collm_nas.agents.llm_session import check_role_options, resolve_llm

        config.llm_options = check_role_options(request.llm_options())
        choice = request.llm
        if choice in ("auto", "endpoint") and config.llm_options.get("base_url"):
            config.llm = "endpoint"  # the request names the endpoint itself
        else:
            config.llm, note = resolve_llm(choice)  # type: ignore[assignment]
        if note:
            note += (f": the LLM-free fallback strategy '{request.fallback}' runs instead" if strategy.needs_llm
                     else f": {request.strategy} uses its learned ranker")
    return config, note


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
    """(db_path, table_path): the context's, else the ones the run started with, else the settings'."""
    given = _context_dict(context)
    settings = load_settings()
    if given.get("runs_dir"):
        db_path = str(settings.db_path(given["runs_dir"]).resolve())
    else:
        db_path = state.get("db_path") or str(settings.db_path().resolve())
    if given.get("table_path"):
        table_path = str(Path(settings.table_path(given["table_path"])).resolve())
    else:
        table_path = state.get("table_path") or settings.table_path()
    return db_path, table_path


# -------------------------------------------------------------- LLM clients
_llm_lock = threading.Lock()
_llm_open: dict[str, Any] = {}
_llm_stack = ExitStack()


def close_server_llms() -> None:
    """Close every LLM client this process opened (stops the embedded llama.cpp server)."""
    with _llm_lock:
        _llm_open.clear()
        _llm_stack.close()


atexit.register(close_server_llms)


def server_llm(config: RunConfig, log_dir: Path) -> Any:
    """The LLM roles a run of this server talks to, opened on first use and kept for the process."""
    strategy = make_strategy(config.strategy)
    if not strategy.uses_llm or config.llm == "none":
        return None
    if config.llm not in ("endpoint", "local"):
        raise UserError(f"run needs LLM source '{config.llm}', which a LangGraph server cannot open; "
                        "use llm endpoint or local")
    key = json.dumps([config.llm, config.llm_options, list(strategy.llm_roles)], sort_keys=True)
    with _llm_lock:
        if key not in _llm_open:
            from collm_nas.agents.llm_session import open_llm

            log_dir.mkdir(parents=True, exist_ok=True)
            log_path = log_dir / f"server-llm-{len(_llm_open)}.log"
            _llm_open[key] = _llm_stack.enter_context(
                open_llm(config.llm, config.llm_options, log_path=log_path, roles=strategy.llm_roles))
        return _llm_open[key]


class NodeContext:
    """The runtime context the search nodes read (as ``SearchContext``), with LLM clients opened lazily."""

    def __init__(self, db_path: str, table_path: str | None, config: dict[str, Any] | None) -> None:
        self.db_path = db_path
        self.table_path = table_path
        self._config = config

    @property
    def llm(self) -> Any:
        if self._config is None:
            return None
        return server_llm(RunConfig.model_validate(self._config), Path(self.db_path).parent / "logs")


def _serve(name: str, node: Callable[..., Any]) -> Callable[..., Any]:
    """``node`` with its context made from the server's context and the run's state."""

    def served(state: StudioState, runtime: Runtime[ServerContext]) -> dict[str, Any]:
        db_path, table_path = _places(runtime.context, state)
        context = NodeContext(db_path, table_path, state.get("config"))
        try:
            update = node(state, runtime.override(context=context))
        except UserError as e:
            if isinstance(e, ValueError):
                raise
            raise SearchError(str(e)) from e
        if name == FINISH:  # the run is over: its workers (process / ray backends) and spool go
            evaluator = components_for(db_path, state["run_id"], state["config"], table_path).evaluator
            evaluator.close()
            evaluator.clear_spool()
        return update

    served.__name__ = served.__qualname__ = name
    served.__doc__ = node.__doc__
    return served


# ------------------------------------------------------------------- start
def _default_run_id(config: RunConfig, task_id: str) -> str:
    from collm_nas.api import run_label

    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", Path(run_label(config.evaluator, config.space, config.dataset)).stem)
    tag = re.sub(r"[^A-Za-z0-9]", "", task_id)[:8] or "run"
    return f"{config.strategy}-{stem[:30]}-{tag}"


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
    request = parse_request(fields)
    asked = state.get("run_id")
    if asked and asked == state.get("started_run_id"):
        asked = None  # the previous run's id, left in the state: not a request
    db_path, table_path = _places(runtime.context, {})
    settings = load_settings()
    config, note = run_config(request, settings.backend, settings.workers)
    info = runtime.execution_info
    run_id = asked or _default_run_id(config, info.task_id if info is not None else "")
    if not _RUN_ID.match(run_id):
        raise UserError(f"bad run id '{run_id}'; use letters, digits, '.', '_' and '-' (at most 100)")
    comps = components_for(db_path, run_id, config, table_path)  # validates the whole configuration
    require_backend(config.backend)
    prepare = getattr(comps.evaluator, "prepare", None)
    if callable(prepare):  # e.g. the train evaluator's data is there
        prepare()
    store = open_store(db_path)
    stored = config.model_dump(mode="json")
    existing = store.get_run(run_id)
    if existing is None:
        store.create_run(run_id, stored)
    elif not (existing.config == stored and existing.status == ACTIVE and store.count_trials(run_id) == 0):
        raise UserError(f"run '{run_id}' already exists in {db_path}; leave run_id empty or pick another")
    write = get_stream_writer()
    if note:
        write({"event": "warning", "round": 0, "message": note})
    write({"event": "started", "run_id": run_id, "db_path": db_path, "budget": config.budget,
           "strategy": config.strategy, "approval": config.approval})
    return {"run_id": run_id, "started_run_id": run_id, "config": stored, "db_path": db_path,
            "table_path": table_path, "round": 0, "evaluated": 0, "memory": {}, "best": None, "strategy": None,
            "proposals": [], "batch": [], "screening": {}, "feedback": None, "llm_calls": [],
            "stop_reason": None, "human_comment": None}


def build_studio_graph(checkpointer: Any = None):
    """The search graph with a typed input (:class:`SearchRequest`) and context (:class:`ServerContext`)."""
    g = StateGraph(StudioState, context_schema=ServerContext, input_schema=SearchRequest)
    g.add_node(START_NODE, start)
    add_search_loop(g, wrap=_serve)
    g.add_edge(START, START_NODE)
    g.add_node(REFUSE, refuse)
    g.add_conditional_edges(START_NODE, _after_start, [NAVIGATOR, REFUSE])
    g.add_edge(REFUSE, END)
    return g.compile(checkpointer=checkpointer, name="collm-nas-search")


graph = build_studio_graph()
