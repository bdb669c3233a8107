"""The search loop as a LangGraph state machine.

One round::

    navigator -> generator -> coordinator -> evaluate -> record --(continue)--> navigator
                     ^            |   |                    |
                     +-(correct)--+   +--(nothing new)-----+--(stop)--> finish -> END

* ``navigator``   the strategy's Navigator writes the round's Strategy;
* ``generator``   its Generator proposes candidate NCodes;
* ``coordinator`` the validity tool screens them (illegal, duplicates); when
                  the batch is short and the generator takes feedback it goes
                  back to the generator once with what was wrong, then the
                  batch is topped up to the round's quota by the LLM-free
                  fallback;
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

from collm_nas.agents import Generator, RoundContext, Screening, Strategy
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


def _round_context(c: Components, state: SearchState, round_no: int, runtime: Runtime[SearchContext]) -> RoundContext:
    return RoundContext(
        space=c.space,
        history=c.history,
        round=round_no,
        seed=c.config.seed,
        mode=c.evaluator.mode,
        quota=c.coordinator.quota(len(c.history)),
        is_legal=c.checker.is_valid,
        memory=json_copy(state.get("memory") or {}),
        objective=c.objective,
        checker=c.checker,
        llm=runtime.context.llm if c.strategy.uses_llm else None,
        prior=c.prior,
    )


def json_copy(value: Any) -> Any:
    """A deep copy of plain data, so a node never mutates the checkpointed state in place."""
    if isinstance(value, dict):
        return {k: json_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_copy(v) for v in value]
    return value


def _warn(ctx: RoundContext) -> None:
    """Pass the roles' one-line notices (e.g. the LLM fell back) to the stream."""
    if ctx.warnings:
        write = get_stream_writer()
        for message in ctx.warnings:
            write({"event": "warning", "round": ctx.round, "message": message})


def navigator(state: SearchState, runtime: Runtime[SearchContext]) -> dict[str, Any]:
    started = time.time()
    c = _components(state, runtime)
    round_no = state.get("round", 0) + 1
    ctx = _round_context(c, state, round_no, runtime)
    strategy = c.strategy.navigator.navigate(ctx)
    _warn(ctx)
    return {
        "round": round_no,
        "strategy": strategy.model_dump(),
        "memory": ctx.memory,
        "proposals": [],
        "batch": [],
        "screening": {},
        "feedback": None,
        "llm_calls": ctx.calls,
        "round_started": started,
    }


def generator(state: SearchState, runtime: Runtime[SearchContext]) -> dict[str, Any]:
    c = _components(state, runtime)
    ctx = _round_context(c, state, state["round"], runtime)
    strategy = Strategy.model_validate(state["strategy"])
    feedback = state.get("feedback")
    if feedback:
        screened = Screening.from_dict(feedback)
        wanted = ctx.quota - len(screened.accepted)
        proposals = c.strategy.generator.revise(strategy, wanted, ctx, screened.feedback(wanted)) or []
    else:
        proposals = c.strategy.generator.generate(strategy, ctx.quota, ctx)
    _warn(ctx)
    return {"proposals": list(proposals), "memory": ctx.memory,
            "llm_calls": list(state.get("llm_calls") or []) + ctx.calls}


def coordinator(state: SearchState, runtime: Runtime[SearchContext]) -> dict[str, Any]:
    c = _components(state, runtime)
    ctx = _round_context(c, state, state["round"], runtime)
    proposals = state.get("proposals") or []
    earlier = state.get("feedback")
    if earlier:  # second pass: screen the corrected proposals beside what the first pass accepted
        first = Screening.from_dict(earlier)
        screening = first.merge(c.coordinator.screen(proposals, ctx, ctx.quota, accepted=first.accepted))
    else:
        screening = c.coordinator.screen(proposals, ctx, ctx.quota, top_up=False)
        short = len(screening.accepted) < ctx.quota
        if short and ctx.llm is not None and proposals and _takes_feedback(c):
            # One corrective follow-up: back to the generator with what was wrong.
            return {"feedback": screening.to_dict(), "screening": screening.figures(), "batch": []}
        missing = ctx.quota - len(screening.accepted)
        if missing > 0:
            screening.topped_up = c.coordinator.top_up(ctx, missing, set(screening.accepted))
    batch = screening.batch
    update: dict[str, Any] = {"batch": batch, "screening": screening.figures(), "feedback": None,
                              "memory": ctx.memory}
    if not batch:
        best = c.history.best()
        update["stop_reason"] = c.coordinator.stop_reason(len(c.history), best.value if best else None, True)
    return update


def _takes_feedback(c: Components) -> bool:
    generator_type = type(c.strategy.generator)
    return generator_type.revise is not Generator.revise


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
    if c.strategy.uses_llm and c.config.llm != "none":
        figures["llm"] = llm_figures(state.get("llm_calls") or [])
    c.store.add_round(c.run_id, round_no, figures)
    c.store.update_summary(c.run_id, best.ncode if best else None, best.value if best else None)
    stale = round_no - best.round if best is not None else round_no
    stop = c.coordinator.stop_reason(len(c.history), best.value if best else None, stale_rounds=stale)
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


def llm_figures(calls: list[dict[str, Any]]) -> dict[str, Any]:
    """One round's LLM figures: calls, tokens, latency, decoding mode per role, failures."""
    out: dict[str, Any] = {
        "calls": len(calls),
        "failed_calls": sum(1 for call in calls if not call.get("ok")),
        "prompt_tokens": sum(call.get("prompt_tokens", 0) for call in calls),
        "completion_tokens": sum(call.get("completion_tokens", 0) for call in calls),
        "latency_s": round(sum(call.get("latency_s", 0.0) for call in calls), 4),
        "modes": {},
        "prompt_tokens_by_role": {},
        "generator_proposed": sum(call.get("proposed", 0) for call in calls if call.get("role") == "generator"),
    }
    for call in calls:
        out["modes"][call["role"]] = call.get("mode")
        role_tokens = out["prompt_tokens_by_role"]
        role_tokens[call["role"]] = role_tokens.get(call["role"], 0) + call.get("prompt_tokens", 0)
    errors = [call["error"] for call in calls if call.get("error")]
    if errors:
        out["errors"] = errors[:3]
    return out


def finish(state: SearchState, runtime: Runtime[SearchContext]) -> dict[str, Any]:
    c = _components(state, runtime)
    c.store.set_status(c.run_id, FINISHED, state.get("stop_reason"))
    get_stream_writer()(
        {"event": "finished", "run_id": c.run_id, "stop_reason": state.get("stop_reason"), "best": state.get("best")}
    )
    return {}


def _after_coordinator(state: SearchState) -> str:
    if state.get("feedback"):
        return GENERATOR
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
    g.add_conditional_edges(COORDINATOR, _after_coordinator, [GENERATOR, EVALUATE, FINISH])
    g.add_edge(EVALUATE, RECORD)
    g.add_conditional_edges(RECORD, _after_record, [NAVIGATOR, FINISH])
    g.add_edge(FINISH, END)
    return g.compile(checkpointer=checkpointer, name="collm-nas-search")
