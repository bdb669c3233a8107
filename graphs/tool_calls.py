"""Running an LLM role's tool calls through LangGraph's ``ToolNode``.

The graph's ``tools`` node calls :func:`answer_tool_calls`: a ``ToolNode`` over
the role's tools answers every call of the model's last message with a
``ToolMessage``; an unknown tool or bad arguments are answered with an error
message (status ``error``), never raised. :func:`run_tool_calls` does the same
outside a search graph (a one-node graph around the same ToolNode).
"""

from __future__ import annotations

import warnings
from functools import lru_cache
from typing import Any, TypedDict

from langchain_core.messages import BaseMessage, ToolMessage
from langgraph.graph import END, START, StateGraph
from langgraph.prebuilt import ToolNode


class _ToolState(TypedDict, total=False):
    conversation: list[Any]
    tools: list[Any]


def tool_node(tools: list[Any]) -> ToolNode:
    return ToolNode(tools, handle_tool_errors=True, messages_key="conversation")


def answer_tool_calls(tools: list[Any], conversation: list[BaseMessage]) -> list[ToolMessage]:
    """The ToolMessages answering the tool calls of ``conversation[-1]`` (inside a LangGraph node).

    Calls whose arguments were not even JSON (``invalid_tool_calls``) never reach the ToolNode; each gets
    an error message too, so every call the model made is answered.
    """
    last = conversation[-1]
    answers: list[ToolMessage] = []
    if getattr(last, "tool_calls", None):
        with warnings.catch_warnings():  # ToolNode serialises its runtime for error messages; nothing to see
            warnings.filterwarnings("ignore", message="Pydantic serializer warnings")
            out = tool_node(tools).invoke({"conversation": conversation})
        answers = list(out["conversation"])
    for bad in getattr(last, "invalid_tool_calls", None) or ():
        answers.append(ToolMessage(
            content=f"Error: the arguments of {bad.get('name')!r} are not valid JSON ({bad.get('error') or 'unreadable'}); "
                    "call it again with a JSON object of its parameters",
            tool_call_id=bad.get("id") or "", name=bad.get("name") or "", status="error"))
    return answers


def _node(state: _ToolState) -> dict[str, Any]:
    return {"conversation": answer_tool_calls(state["tools"], state["conversation"])}


@lru_cache(maxsize=1)
def _runner() -> Any:
    g = StateGraph(_ToolState)
    g.add_node("tools", _node)
    g.add_edge(START, "tools")
    g.add_edge("tools", END)
    return g.compile(name="collm-nas-tools")


def run_tool_calls(tools: list[Any], last: BaseMessage, conversation: list[BaseMessage] | None = None
                   ) -> list[ToolMessage]:
    """Answer the tool calls of ``last`` outside a search graph (a one-node graph around the same ToolNode)."""
    convo = list(conversation or []) or [last]
    return list(_runner().invoke({"conversation": convo, "tools": tools})["conversation"])
