"""The search loop as a LangGraph state machine; every node is a thin adapter over one engine step.

One round::

    navigator -> generator -> coordinator -> approve -> evaluate -> record --(continue)--> navigator
      |  ^          |  ^  ^        |   |          |                      |
      v  |          v  |  +-(correct)+  |          +--(rejected)--> navigator
      tools         tools              +--(nothing new)------------------+--(stop)--> finish -> END

* ``navigator``   the strategy's Navigator writes the round's Strategy
                  (:meth:`SearchLoop.plan`);
* ``tools``       a LangGraph ``ToolNode`` answers the tool calls an LLM role
                  made (``decode_ncode``, ``check_ncodes``, ``lookup_trials``,
                  ``rank_pool``), then the role goes on; bounded per turn;
* ``generator``   its Generator proposes candidate NCodes (:meth:`SearchLoop.propose`);
* ``coordinator`` the validity checker screens them (illegal with reasons,
                  duplicates); a short batch goes back to the generator once
                  with what was wrong, then is topped up by the LLM-free
                  fallback (:meth:`SearchLoop.screen`);
* ``approve``     when the run asks for approval, pauses with ``interrupt()``
                  showing the batch; the reply approves, edits or rejects it;
* ``evaluate``    evaluates what the trial store does not hold yet and records
                  each result the moment it arrives;
* ``record``      writes the round's figures and the run summary, streams
                  progress, and asks whether to stop.

The nodes get the run's :class:`~collm_nas.engine.SearchLoop` from the
runtime context (``SearchContext.loop``): its components are built once per
run, not per node.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import interrupt

from collm_nas.core import UserError
from collm_nas.engine import loop as steps
from collm_nas.graphs.tool_calls import answer_tool_calls
from collm_nas.graphs.state import SearchContext, SearchState

NAVIGATOR = "navigator"
TOOLS = "tools"
GENERATOR = "generator"
COORDINATOR = "coordinator"
APPROVE = "approve"
EVALUATE = "evaluate"
RECORD = "record"
FINISH = "finish"
# The engine's step names, as graph nodes.
NODE_OF = {steps.PLAN: NAVIGATOR, steps.TOOLS: TOOLS, steps.PROPOSE: GENERATOR, steps.SCREEN: COORDINATOR,
           steps.APPROVE: APPROVE, steps.EVALUATE: EVALUATE, steps.RECORD: RECORD, steps.FINISH: FINISH}


def _emit() -> Callable[[dict[str, Any]], None]:
    return get_stream_writer()


def navigator(state: SearchState, runtime: Runtime[SearchContext]) -> dict[str, Any]:
    return runtime.context.loop.plan(dict(state), _emit())


def tools(state: SearchState, runtime: Runtime[SearchContext]) -> dict[str, Any]:
    """Answer the tool calls of the LLM role's last message with LangGraph's ToolNode."""
    loop = runtime.context.loop
    conversation = list(state.get("conversation") or [])
    answers = answer_tool_calls(loop.role_tools(state["tool_turn"]), conversation)
    return {"conversation": conversation + answers}


def generator(state: SearchState, runtime: Runtime[SearchContext]) -> dict[str, Any]:
    return runtime.context.loop.propose(dict(state), _emit())


def coordinator(state: SearchState, runtime: Runtime[SearchContext]) -> dict[str, Any]:
    return runtime.context.loop.screen(dict(state), _emit())


def approve(state: SearchState, runtime: Runtime[SearchContext]) -> dict[str, Any]:
    """Pause for a person's approval of the batch when the run asks for it.

    Everything before ``interrupt()`` is read-only: LangGraph re-runs this node
    from its start on resume, replaying earlier answers in order.
    """
    loop = runtime.context.loop
    pause = loop.pause(dict(state))
    if pause is None:
        return {}
    while True:
        raw = interrupt(pause.payload)
        try:
            reply = loop.check_reply(pause, raw)
            break
        except UserError as e:  # the pause stays open, showing what was wrong
            pause = loop.pause(dict(state), error=str(e)) or pause
    return loop.answer(dict(state), pause, reply)


def evaluate(state: SearchState, runtime: Runtime[SearchContext]) -> dict[str, Any]:
    return runtime.context.loop.evaluate(dict(state), _emit())


def record(state: SearchState, runtime: Runtime[SearchContext]) -> dict[str, Any]:
    return runtime.context.loop.record(dict(state), _emit())


def finish(state: SearchState, runtime: Runtime[SearchContext]) -> dict[str, Any]:
    return runtime.context.loop.finish(dict(state), _emit())


def _route(after: Callable[[dict[str, Any]], str]) -> Callable[[SearchState], str]:
    def route(state: SearchState) -> str:
        return NODE_OF[after(dict(state))]

    return route


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
    ``collm_nas.studio`` gives the nodes their runtime context that way).
    """
    def node(name: str, fn: Callable[..., Any]) -> None:
        g.add_node(name, wrap(name, fn) if wrap is not None else fn)

    Loop = steps.SearchLoop
    node(NAVIGATOR, navigator)
    node(TOOLS, tools)
    node(GENERATOR, generator)
    node(COORDINATOR, coordinator)
    node(APPROVE, approve)
    node(EVALUATE, evaluate)
    node(RECORD, record)
    node(FINISH, finish)
    g.add_conditional_edges(NAVIGATOR, _route(Loop.after_plan), [GENERATOR, TOOLS])
    g.add_conditional_edges(TOOLS, _route(Loop.after_tools), [NAVIGATOR, GENERATOR])
    g.add_conditional_edges(GENERATOR, _route(Loop.after_propose), [COORDINATOR, TOOLS])
    g.add_conditional_edges(COORDINATOR, _route(Loop.after_screen), [GENERATOR, APPROVE, FINISH])
    g.add_conditional_edges(APPROVE, _route(Loop.after_approve), [EVALUATE, NAVIGATOR])
    g.add_edge(EVALUATE, RECORD)
    g.add_conditional_edges(RECORD, _route(Loop.after_record), [NAVIGATOR, FINISH])
    g.add_edge(FINISH, END)
