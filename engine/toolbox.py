"""The tools an LLM role may call, bound to one run: ``decode_ncode``, ``check_ncodes``, ``lookup_trials`` and,
for roles that declare it (hybrid), ``rank_pool`` (the learned ranker).

Which tools a role gets is declared by the role itself (``Navigator.tools`` / ``Generator.tools``); the tools are
built once per run and per role.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from collm_nas.tools import make_lookup_tool, make_ncode_tools, make_validity_tool

if TYPE_CHECKING:
    from collm_nas.engine.loop import SearchLoop


def _build(loop: "SearchLoop", name: str) -> Any:
    if name == "decode_ncode":
        return make_ncode_tools(loop.space)[1]
    if name == "encode_ncode":
        return make_ncode_tools(loop.space)[0]
    if name == "check_ncodes":
        return make_validity_tool(loop.checker)
    if name == "lookup_trials":
        return make_lookup_tool(loop.history, loop.space, loop.objective)
    if name == "rank_pool":
        from collm_nas.agents.hybrid import make_learned_rank_tool

        return make_learned_rank_tool(lambda: loop.context({}, 0))
    raise ValueError(f"no tool named {name!r}")


def role_tools(loop: "SearchLoop", role: str) -> list[Any]:
    """The LangChain tools ``role`` (navigator, generator) may call in this run."""
    cache: dict[str, list[Any]] = loop.__dict__.setdefault("_role_tools", {})
    if role not in cache:
        owner = loop.strategy.navigator if role == "navigator" else loop.strategy.generator
        cache[role] = [_build(loop, name) for name in owner.tools]
    return cache[role]
