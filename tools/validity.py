"""The validity checker: is an NCode a legal architecture, and if not, why."""

from __future__ import annotations

from typing import TYPE_CHECKING

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from pydantic import BaseModel, Field

from collm_nas.tools.messages import validation_message
from collm_nas.spaces.constraints import Constraint, violated
from collm_nas.core.space import Problem, SearchSpace

if TYPE_CHECKING:  # LangChain is imported when a tool is made, not with the checker
    from langchain_core.tools import StructuredTool

ResourceFn = Callable[[str], Mapping[str, float]]


@dataclass
class ValidityChecker:
    """Checks codes against the space's format, its structural rules and resource constraints."""

    space: SearchSpace
    constraints: Sequence[Constraint] = ()
    resources: ResourceFn | None = None
    # The evaluator's own refusal of a legal code (e.g. a cell a partial results table lacks); None: none.
    evaluator_problem: Callable[[str], str | None] | None = None

    def problems(self, ncode: str) -> list[Problem]:
        found = self.space.format_problems(ncode)
        if found:
            return found
        found = list(self.space.structural_problems(ncode))
        if self.evaluator_problem is not None and not found:
            why = self.evaluator_problem(ncode)
            if why:
                found.append(Problem("evaluator", why))
        if self.constraints:
            figures = dict(self.space.costs(ncode))
            if self.resources is not None:
                figures.update(self.resources(ncode))
            found += [Problem("constraint", msg) for msg in violated(self.constraints, figures)]
        return found

    def is_valid(self, ncode: str) -> bool:
        return not self.problems(ncode)

    def report(self, ncode: str) -> dict:
        problems = self.problems(ncode)
        return {
            "ncode": ncode,
            "valid": not problems,
            "problems": [{"kind": p.kind, "message": p.message} for p in problems],
        }

    def count_legal(self, limit: int = 2_000_000) -> int | None:
        """Number of legal architectures, or None when the space is too large to count."""
        if self.space.size_bound() > limit:
            return None
        return sum(1 for code in self.space.enumerate() if self.is_valid(code))

    def legal(self, ncodes: Iterable[str]) -> list[str]:
        return [c for c in ncodes if self.is_valid(c)]


class CheckArgs(BaseModel):
    ncodes: list[str] = Field(description="NCodes to check, one string per architecture", min_length=1)


def make_validity_tool(checker: ValidityChecker) -> StructuredTool:
    """The checker as a LangChain tool (graph nodes and LLM agents call the same code)."""
    from langchain_core.tools import StructuredTool

    def check_ncodes(ncodes: list[str]) -> list[dict]:
        return [checker.report(c) for c in ncodes]

    return StructuredTool.from_function(
        func=check_ncodes,
        name="check_ncodes",
        description=(
            f"Check NCodes of the '{checker.space.name}' search space. For each code, says whether it "
            "is a legal architecture and, if not, every reason: wrong length, a character out of range, "
            "an inactive decision that is not 0, a structural rule of the space, or a resource constraint."
        ),
        args_schema=CheckArgs,
        handle_tool_error=True,
        handle_validation_error=validation_message,
    )
