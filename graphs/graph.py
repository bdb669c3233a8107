"""The search loop as a LangGraph state machine.

One round::

    navigator -> generator -> coordinator -> approve -> evaluate -> record --(continue)--> navigator
                     ^            |   |          |                      |
                     +-(correct)--+   |          +--(rejected)--> navigator
                                      +--(nothing new)------------------+--(stop)--> finish -> END

* ``navigator``   the strategy's Navigator writes the round's Strategy;
* ``generator``   its Generator proposes candidate NCodes;
* ``coordinator`` the validity tool screens them (illegal, duplicates); when
                  the batch is short and the generator takes feedback it goes
                  back to the generator once with what was wrong, then the
                  batch is topped up to the round's quota by the LLM-free
                  fallback;
* ``approve``     when the run asks for approval (every round, or over a cost
                  threshold), pauses with ``interrupt()`` showing the batch;
                  the reply approves, edits or rejects it (a rejection's
                  comment reaches the next round's Navigator);
* ``evaluate``    evaluates what the trial store does not hold yet and records
                  each result the moment it arrives (so a crash loses nothing
                  and a re-run evaluates nothing twice);
* ``record``      writes the round's figures and the run summary, streams
                  progress, and asks the Coordinator whether to stop.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import interrupt

from collm_nas.agents import Generator, RoundContext, Screening, Strategy
from collm_nas.errors import UserError
from collm_nas.graphs.approval import apply_edit, estimate_costs, needs_approval, parse_reply, pause_payload
from collm_nas.graphs.components import Components, components_for
from collm_nas.graphs.state import SearchContext, SearchState
from collm_nas.graphs.store import FINISHED

NAVIGATOR = "navigator"
GENERATOR = "generator"
COORDINATOR = "coordinator"
APPROVE = "approve"
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
    ctx.human_comment = state.get("human_comment")  # a person's reason for rejecting the last batch
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
        "human_comment": None,
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


def approve(state: SearchState, runtime: Runtime[SearchContext]) -> dict[str, Any]:
    """Pause for a person's approval of the batch when the run asks for it.

    Everything before ``interrupt()`` is read-only: LangGraph re-runs this node
    from its start on resume, replaying earlier answers in order.
    """
    c = _components(state, runtime)
    batch = list(state.get("batch") or [])
    estimate = estimate_costs(batch, c.evaluator, c.history.trials())
    reason = needs_approval(c.config.approval, c.config.approval_threshold_s, estimate)
    if reason is None:
        return {}
    evaluated = len(c.history)
    error = None
    while True:
        payload = pause_payload(run_id=c.run_id, round_no=state["round"], batch=batch, space=c.space,
                                checker=c.checker, strategy=state.get("strategy"), estimate=estimate,
                                budget=c.config.budget, evaluated=evaluated, reason=reason, error=error)
        raw = interrupt(payload)
        try:
            reply = parse_reply(raw)
            if reply.action == "edit":
                edited = apply_edit(batch, reply, checker=c.checker, evaluated=c.history,
                                    budget_left=c.config.budget - evaluated)
            break
        except UserError as e:  # the pause stays open, showing what was wrong
            error = str(e)
    figures = dict(state.get("screening") or {})
    figures["human"] = reply.to_dict()
    if reply.action == "reject":
        # Nothing is evaluated; the round is kept with the person's comment, and a new round begins.
        c.store.add_round(c.run_id, state["round"], {**figures, "evaluated": 0, "failed": 0,
                                                     "total_evaluated": evaluated, "rejected": True,
                                                     "strategy": (state.get("strategy") or {}).get("summary")})
        return {"batch": [], "screening": figures, "human_comment": reply.comment or "(no comment given)"}
    if reply.action == "edit":
        figures["human"]["batch"] = edited
        return {"batch": edited, "screening": figures}
    return {"screening": figures}


def _after_approve(state: SearchState) -> str:
    return EVALUATE if state.get("batch") else NAVIGATOR


def _takes_feedback(c: Components) -> bool:
    generator_type = type(c.strategy.generator)
    return generator_type.revise is not Generator.revise


def evaluate(state: SearchState, runtime: Runtime[SearchContext]) -> dict[str, Any]:
    c = _components(state, runtime)
    batch = state.get("batch") or []
    done = c.store.recorded(c.run_id, batch)
    todo = [code for code in batch if code not in done]
    searched = c.evaluator.searched_metric
    write = get_stream_writer()
    for result in c.evaluator.iter_evaluate(todo):
        value = result.metrics.get(searched) if result.status == "ok" else None
        c.store.add_trial(c.run_id, result, state["round"], value)
        write({"event": "evaluation", "run_id": c.run_id, "round": state["round"], "ncode": result.ncode,
               "status": result.status, "value": value, "error": result.error})
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
        # A round the strategy meant to run without the LLM (e.g. initial random trials) is no fallback.
        figures["llm_planned"] = ((state.get("strategy") or {}).get("plan") or {}).get("llm") != "not needed"
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
    return APPROVE if state.get("batch") else FINISH


def _after_record(state: SearchState) -> str:
    return FINISH if state.get("stop_reason") else NAVIGATOR


def build_graph(checkpointer: Any = None):
    """The compiled search graph (pass a checkpointer to make runs resumable)."""
    g = StateGraph(SearchState, context_schema=SearchContext)
    add_search_loop(g)
    g.add_edge(START, NAVIGATOR)
    return g.compile(checkpointer=checkpointer, name="collm-nas-search")


def add_search_loop(g: StateGraph, wrap: Callable[[str, Callable[..., Any]], Callable[..., Any]] | None = None,
                    ) -> None:
    """Add the round's nodes and edges to ``g``; its entry (an edge into NAVIGATOR) is the caller's.

    ``wrap(name, node)`` may replace each node by a wrapper (the LangGraph server's graph in
    ``collm_nas.graphs.studio`` gives the nodes their runtime context that way).
    """
    def node(name: str, fn: Callable[..., Any]) -> None:
        g.add_node(name, wrap(name, fn) if wrap is not None else fn)

    node(NAVIGATOR, navigator)
    node(GENERATOR, generator)
    node(COORDINATOR, coordinator)
    node(APPROVE, approve)
    node(EVALUATE, evaluate)
    node(RECORD, record)
    node(FINISH, finish)
    g.add_edge(NAVIGATOR, GENERATOR)
    g.add_edge(GENERATOR, COORDINATOR)
    g.add_conditional_edges(COORDINATOR, _after_coordinator, [GENERATOR, APPROVE, FINISH])
    g.add_conditional_edges(APPROVE, _after_approve, [EVALUATE, NAVIGATOR])
    g.add_edge(EVALUATE, RECORD)
    g.add_conditional_edges(RECORD, _after_record, [NAVIGATOR, FINISH])
    g.add_edge(FINISH, END)
