"""``lookup_trials``: an LLM role queries the run's trial store (best k, by option, by code)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from typing import Any, Literal

from pydantic import BaseModel, Field

from collm_nas.tools.messages import validation_message
from collm_nas.core import History, Objective, SearchSpace, Trial

if TYPE_CHECKING:  # LangChain is imported when a tool is made, not with the checker
    from langchain_core.tools import StructuredTool

MAX_ROWS = 20


class LookupArgs(BaseModel):
    query: Literal["best", "by_option", "by_code"] = Field(
        description="best: the k best trials; by_option: trials whose DECISION took OPTION (with the count, mean "
        "and best value); by_code: the trials of the given NCodes (or 'not evaluated')")
    k: int = Field(5, ge=1, le=MAX_ROWS, description="how many trials to show (best, by_option)")
    decision: str | None = Field(None, description="by_option: a decision name of the space")
    option: str | None = Field(None, description="by_option: one of that decision's options")
    codes: list[str] = Field(default_factory=list, max_length=MAX_ROWS, description="by_code: NCodes to look up")


def _row(trial: Trial, objective: Objective) -> dict[str, Any]:
    row: dict[str, Any] = {"ncode": trial.ncode, "arch": trial.arch, "round": trial.round, "status": trial.status}
    if trial.ok:
        row[objective.metric] = trial.value
        row.update({k: v for k, v in trial.metrics.items() if k != objective.metric})
    else:
        row["error"] = trial.error
    return row


def make_lookup_tool(history: History, space: SearchSpace, objective: Objective) -> StructuredTool:
    """``lookup_trials`` over the run's history (the live view: it always sees the latest trials)."""
    from langchain_core.tools import StructuredTool, ToolException

    def lookup_trials(query: str, k: int = 5, decision: str | None = None, option: str | None = None,
                      codes: list[str] | None = None) -> dict[str, Any]:
        hist = history
        trials = list(hist.trials())
        if query == "best":
            ranked = objective.ranked(trials)
            return {"evaluated": len(trials), "best": [_row(t, objective) for t in ranked[:k]]}
        if query == "by_option":
            names = [d.name for d in space.decisions]
            if decision not in names:
                raise ToolException(f"unknown decision {decision!r}; decisions are {', '.join(names)}")
            d = space.decision(decision)
            if option not in d.options:
                raise ToolException(f"decision {decision!r} has no option {option!r}; options are "
                                    f"{', '.join(d.options)}")
            pos, idx = names.index(decision), d.options.index(option)
            chosen = [t for t in trials if len(t.ncode) == space.length and space.indices(t.ncode)[pos] == idx]
            ranked = objective.ranked(chosen)
            values = [t.value for t in ranked]
            return {"decision": decision, "option": option, "count": len(chosen),
                    "mean": sum(values) / len(values) if values else None,
                    "best": values[0] if values else None, "trials": [_row(t, objective) for t in ranked[:k]]}
        if not codes:
            raise ToolException("by_code needs 'codes': a list of NCodes")
        out = []
        for code in codes[:MAX_ROWS]:
            t = hist.get(code)
            out.append(_row(t, objective) if t is not None else {"ncode": code, "status": "not evaluated"})
        return {"trials": out}

    return StructuredTool.from_function(
        func=lookup_trials,
        name="lookup_trials",
        description=(f"Look up this run's evaluated architectures of the '{space.name}' space, measured by "
                     f"{objective.metric} ({'higher' if objective.mode == 'max' else 'lower'} is better): the best "
                     "k, the trials with one option of a decision, or the trials of given NCodes."),
        args_schema=LookupArgs,
        handle_tool_error=True,
        handle_validation_error=validation_message,
    )
