"""Driving a run's graph from Python: the one driver of the search loop.

Production runs (the API, Studio, the dashboard) stream the compiled graph with their checkpointer; tests,
conformance suites and quick scripts call :func:`run_graph`, which streams the same graph (with an in-memory
checkpointer unless given one), answers approval pauses with a function, and can stop after some rounds::

    end = run_graph(loop, approve=lambda pause: {"action": "approve"}, max_rounds=3)
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from langgraph.types import Command

from collm_nas.core import UserError
from collm_nas.engine.loop import SearchLoop, initial_state
from collm_nas.graphs.graph import NODE_OF, RECORD, build_graph
from collm_nas.graphs.state import SearchContext

State = dict[str, Any]
STEP_OF = {node: step for step, node in NODE_OF.items()}


def run_graph(loop: SearchLoop, state: State | None = None, *, approve: Callable[[dict[str, Any]], Any] | None = None,
              max_rounds: int | None = None, on_step: Callable[[str, State, State], None] | None = None,
              checkpointer: Any = None, thread_id: str | None = None) -> State:
    """Run ``loop``'s graph from ``state`` (default: a new run) to its end, or for ``max_rounds`` more rounds.

    ``approve(payload) -> reply`` answers approval pauses (without it a pause is a UserError); a reply the
    graph refuses is asked again, as the graph's approve node does. ``on_step(step, state_before, update)``
    watches every step, named as the engine names them (plan, tools, propose, screen, approve, evaluate,
    record, finish). Returns the last state.
    """
    from langgraph.checkpoint.memory import InMemorySaver

    graph = build_graph(checkpointer if checkpointer is not None else InMemorySaver())
    config = {"configurable": {"thread_id": thread_id or f"{loop.run_id}-{uuid.uuid4().hex[:8]}"},
              "recursion_limit": 12 * loop.config.budget + 60}
    current: State = dict(state or initial_state(loop.run_id))
    graph_input: Any = dict(current)
    rounds = 0
    while True:
        pause = None
        for chunk in graph.stream(graph_input, config, context=SearchContext(loop=loop), stream_mode="updates"):
            for node, update in chunk.items():
                if node == "__interrupt__":
                    pause = update[0].value
                    continue
                update = dict(update or {})
                if on_step is not None:
                    on_step(STEP_OF[node], dict(current), update)
                current.update(update)
                if node == RECORD:
                    rounds += 1
                    if max_rounds is not None and rounds >= max_rounds and not current.get("stop_reason"):
                        return current
        if pause is None:
            return current
        if approve is None:
            raise UserError("this run asks for approval; pass approve=... to run_graph")
        graph_input = Command(resume=approve(pause))
