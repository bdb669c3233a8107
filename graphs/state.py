"""Graph state and runtime context.

The state is checkpointed after every step, so it holds only what one round
needs: the run id, counters, the current strategy and batch, a best-so-far
summary, the Navigator's small memory, and a tool conversation while one is in
progress. The run's spec lives in the trial store; its trials too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypedDict

from collm_nas.engine import SearchLoop


class SearchState(TypedDict, total=False):
    run_id: str
    round: int
    evaluated: int
    best: dict[str, Any] | None  # {"ncode", "arch", "value", "reported"}
    strategy: dict[str, Any] | None  # Strategy.model_dump()
    memory: dict[str, Any]  # the Navigator's own memory
    proposals: list[str]
    batch: list[str]
    screening: dict[str, Any]
    feedback: dict[str, Any] | None  # the Coordinator's corrective follow-up for the generator
    llm_calls: list[dict[str, Any]]  # figures of this round's LLM calls (tokens, latency, mode, tools)
    llm_events: list[dict[str, Any]]  # what the watch of a local LLM server saw this round (restarts, timeouts)
    round_started: float
    stop_reason: str | None
    human_comment: str | None  # why a person rejected the last batch (for the next round's Navigator)
    conversation: list[Any] | None  # an LLM role's tool conversation in progress (cleared when it answers)
    tool_turn: str | None  # whose tool calls the tool node answers: navigator or generator


@dataclass
class SearchContext:
    """Runtime context: the run's engine, built once per run and process (never checkpointed)."""

    loop: SearchLoop
