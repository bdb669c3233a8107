"""The search loop as a LangGraph state machine.

One round::

    navigator -> generator -> coordinator -> evaluate -> record --(continue)--> navigator
                                  |                        |
                                  +--(nothing new left)----+--(stop)--> finish -> END

* ``navigator``   the strategy's Navigator writes the round's Strategy;
* ``generator``   its Generator proposes candidate NCodes;
* ``coordinator`` the validity tool screens them (illegal, duplicates), and the
                  batch is topped up to the round's quota;
* ``evaluate``    evaluates what the trial store does not hold yet and records
                  each result the moment it arrives (so a crash loses nothing
                  and a re-run evaluates nothing twice);
* ``record``      writes the round's figures and the run summary, streams
                  progress, and asks the Coordinator whether to stop.
"""

from __future__ import annotations

import time
from typing import Any

from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from collm_nas.agents import RoundContext, Strategy
from collm_nas.graphs.components import Components, components_for
from collm_nas.graphs.state import SearchContext, SearchState
from collm_nas.graphs.store import FINISHED

NAVIGATOR = "navigator"
GENERATOR = "generator"
COORDINATOR = "coordinator"
EVALUATE = "evaluate"
RECORD = "record"
FINISH = "finish"


def _components(state: SearchState, runtime: Runtime[SearchContext]) -> Components:
    ctx = runtime.context
    return components_for(ctx.db_path, state["run_id"], state["config"], ctx.table_path)


def _round_context(c: Components, state: SearchState, round_no: int, memory: dict | None = None) -> RoundContext:
    return RoundContext(
        space=c.space,
        history=c.history,
        round=round_no,
        seed=c.config.seed,
        mode=c.evaluator.mode,
        quota=c.coordinator.quota(len(c.history)),
        is_legal=c.checker.is_valid,
        memory=memory if memory is not None else dict(state.get("memory") or {}),
    )


def navigator(state: SearchState, runtime: Runtime[SearchContext]) -> dict[str, Any]:
    c = _components(state, runtime)
    round_no = state.get("round", 0) + 1
    memory = dict(state.get("memory") or {})
    strategy = c.strategy.navigator.navigate(_round_context(c, state, round_no, memory))
    return {
        "round": round_no,
        "strategy": strategy.model_dump(),
        "memory": memory,
        "proposals": [],
        "batch": [],
        "round_started": time.time(),
    }


def generator(state: SearchState, runtime: Runtime[SearchContext]) -> dict[str, Any]:
    c = _components(state, runtime)
    ctx = _round_context(c, state, state["round"])
    strategy = Strategy.model_validate(state["strategy"])
    return {"proposals": list(c.strategy.generator.generate(strategy, ctx.quota, ctx))}


def coordinator(state: SearchState, runtime: Runtime[SearchContext]) -> dict[str, Any]:
    c = _components(state, runtime)
    ctx = _round_context(c, state, state["round"])
    screening = c.coordinator.screen(state.get("proposals") or [], ctx, ctx.quota)
    batch = screening.batch
    update: dict[str, Any] = {"batch": batch, "screening": screening.figures()}
    if not batch:
        best = c.history.best()
        update["stop_reason"] = c.coordinator.stop_reason(len(c.history), best.value if best else None, True)
    return update


def evaluate(state: SearchState, runtime: Runtime[SearchContext]) -> dict[str, Any]:
    c = _components(state, runtime)
    batch = state.get("batch") or []
    done = c.store.recorded(c.run_id, batch)
    todo = [code for code in batch if code not in done]
    searched = c.evaluator.searched_metric
    for result in c.evaluator.iter_evaluate(todo):
        value = result.metrics.get(searched) if result.status == "ok" else None
        c.store.add_trial(c.run_id, result, state["round"], value)
    c.history.refresh()
    return {"evaluated": len(c.history)}


def record(state: SearchState, runtime: Runtime[SearchContext]) -> dict[str, Any]:
    c = _components(state, runtime)
    round_no = state["round"]
    best = c.history.best()
    best_summary = None
    if best is not None:
        best_summary = {
            "ncode": best.ncode,
            "arch": best.arch,
            "value": best.value,
            "reported": best.metrics.get(c.evaluator.reported_metric),
        }
    this_round = c.history.in_round(round_no)
    figures = {
        **(state.get("screening") or {}),
        "evaluated": len(this_round),
        "failed": sum(1 for t in this_round if not t.ok),
        "total_evaluated": len(c.history),
        "best_value": best.value if best else None,
        "seconds": round(time.time() - state.get("round_started", time.time()), 6),
        "strategy": (state.get("strategy") or {}).get("summary"),
    }
    c.store.add_round(c.run_id, round_no, figures)
    c.store.update_summary(c.run_id, best.ncode if best else None, best.value if best else None)
    stop = c.coordinator.stop_reason(len(c.history), best.value if best else None)
    get_stream_writer()(
        {
            "event": "round",
            "run_id": c.run_id,
            "round": round_no,
            "evaluated": len(c.history),
            "budget": c.config.budget,
            "best": best_summary,
            "searched_metric": c.evaluator.searched_metric,
            "reported_metric": c.evaluator.reported_metric,
            "summary": figures["strategy"],
        }
    )
    return {"best": best_summary, "stop_reason": stop, "evaluated": len(c.history)}


def finish(state: SearchState, runtime: Runtime[SearchContext]) -> dict[str, Any]:
    c = _components(state, runtime)
    c.store.set_status(c.run_id, FINISHED, state.get("stop_reason"))
    get_stream_writer()(
        {"event": "finished", "run_id": c.run_id, "stop_reason": state.get("stop_reason"), "best": state.get("best")}
    )
    return {}


def _after_coordinator(state: SearchState) -> str:
    return EVALUATE if state.get("batch") else FINISH


def _after_record(state: SearchState) -> str:
    return FINISH if state.get("stop_reason") else NAVIGATOR


def build_graph(checkpointer: Any = None):
    """The compiled search graph (pass a checkpointer to make runs resumable)."""
    g = StateGraph(SearchState, context_schema=SearchContext)
    g.add_node(NAVIGATOR, navigator)
    g.add_node(GENERATOR, generator)
    g.add_node(COORDINATOR, coordinator)
    g.add_node(EVALUATE, evaluate)
    g.add_node(RECORD, record)
    g.add_node(FINISH, finish)
    g.add_edge(START, NAVIGATOR)
    g.add_edge(NAVIGATOR, GENERATOR)
    g.add_edge(GENERATOR, COORDINATOR)
    g.add_conditional_edges(COORDINATOR, _after_coordinator, [EVALUATE, FINISH])
    g.add_edge(EVALUATE, RECORD)
    g.add_conditional_edges(RECORD, _after_record, [NAVIGATOR, FINISH])
    g.add_edge(FINISH, END)
    return g.compile(checkpointer=checkpointer, name="collm-nas-search")
