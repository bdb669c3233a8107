"""The engine: a run's components built once (:class:`SearchLoop`) and the steps of a round, without LangGraph;
``prepare_run`` turns a request into a stored, validated run."""

from collm_nas.engine.approval import Pause, Reply, parse_reply
from collm_nas.engine.loop import SearchLoop, initial_state, resolve_space

__all__ = ["Pause", "Reply", "SearchLoop", "initial_state", "parse_reply", "resolve_space"]
