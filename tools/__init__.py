"""LangChain tools over the core: NCode encode/decode and the validity checker."""

from collm_nas.tools.ncode import make_ncode_tools
from collm_nas.tools.validity import ValidityChecker, make_validity_tool

__all__ = ["ValidityChecker", "make_ncode_tools", "make_validity_tool"]
