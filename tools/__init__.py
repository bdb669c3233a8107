"""Tools over the spaces: the validity checker, NCode encode/decode, trial lookup (as LangChain tools an LLM
role may call), candidate pools, and constrained-decoding grammars."""

from collm_nas.tools.grammar import (
    CodeLanguage,
    candidates_gbnf,
    candidates_json_schema,
    code_language,
    pick_gbnf,
    pick_json_schema,
    strategy_gbnf,
    strategy_json_schema,
)
from collm_nas.tools.lookup import make_lookup_tool
from collm_nas.tools.ncode import make_ncode_tools
from collm_nas.tools.validity import ValidityChecker, make_validity_tool

__all__ = [
    "CodeLanguage",
    "ValidityChecker",
    "candidates_gbnf",
    "candidates_json_schema",
    "code_language",
    "make_lookup_tool",
    "make_ncode_tools",
    "make_validity_tool",
    "pick_gbnf",
    "pick_json_schema",
    "strategy_gbnf",
    "strategy_json_schema",
]
