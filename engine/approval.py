"""Human approval of a batch before it is evaluated.

The engine's :meth:`~collm_nas.engine.loop.SearchLoop.pause` says whether a
batch needs approval and builds the :class:`Pause`; the graph's ``approve`` node pauses the graph with LangGraph's ``interrupt()`` when
the run's approval mode asks for it, showing the :func:`pause_payload`; the
person answers with ``Command(resume=reply)``, where the reply is one of::

    "approve"                                   (or {"action": "approve"})
    {"action": "edit", "drop": [codes], "add": [codes]}
    {"action": "reject", "comment": "why, for the Navigator"}

:func:`parse_reply` and :func:`apply_edit` check a reply against the paused
batch; the same functions serve the graph node (where a bad reply keeps the
pause open with the error shown) and the CLI / Python API (which refuse a bad
reply before resuming). Nothing here writes anything: the node may be re-run
on resume, so everything before ``interrupt()`` must be free of side effects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from collm_nas.core import UserError

APPROVAL_MODES = ("never", "every_round", "over_cost")
ACTIONS = ("approve", "edit", "reject")
REPLY_HELP = ('reply "approve"; {"action": "edit", "drop": [codes], "add": [codes]}; '
              'or {"action": "reject", "comment": "..."} (or LangChain\'s {"decisions": [{"type": ...}]})')
# LangChain's human-in-the-loop form: the one action a pause asks about, and the decisions it allows.
HITL_ACTION = "evaluate_batch"
HITL_DECISIONS = ("approve", "edit", "reject")


@dataclass(frozen=True)
class Pause:
    """An approval pause: what the person sees (``payload``), the batch, and evaluations done so far."""

    payload: dict[str, Any]
    batch: list[str]
    evaluated: int


@dataclass(frozen=True)
class Reply:
    action: str
    drop: tuple[str, ...] = ()
    add: tuple[str, ...] = ()
    comment: str = ""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"action": self.action}
        if self.action == "edit":
            out.update(drop=list(self.drop), add=list(self.add))
        if self.comment:
            out["comment"] = self.comment
        return out


def hitl_request(batch: list[str], description: str) -> dict[str, Any]:
    """The pause in LangChain's human-in-the-loop request form (``HITLRequest``): one action, three decisions."""
    return {
        "action_requests": [{"name": HITL_ACTION, "args": {"codes": list(batch)}, "description": description}],
        "review_configs": [{
            "action_name": HITL_ACTION,
            "allowed_decisions": list(HITL_DECISIONS),
            "args_schema": {"type": "object", "required": ["codes"], "properties": {"codes": {
                "type": "array", "items": {"type": "string"},
                "description": "the NCodes to evaluate: drop some, add legal unseen ones"}}},
        }],
    }


def from_decisions(raw: dict[str, Any], batch: list[str] | None) -> dict[str, Any]:
    """LangChain's ``{"decisions": [...]}`` resume value as our reply (one decision: the pause asks about one
    action); an edit's new batch becomes the codes dropped from and added to ``batch``."""
    decisions = raw.get("decisions")
    if set(raw) != {"decisions"} or not isinstance(decisions, list) or len(decisions) != 1 \
            or not isinstance(decisions[0], dict):
        raise UserError(f"a decisions reply holds exactly one decision (the pause asks about one action, "
                        f"{HITL_ACTION}); {REPLY_HELP}")
    decision = decisions[0]
    kind = str(decision.get("type") or "").strip().lower()
    if kind not in HITL_DECISIONS:
        raise UserError(f"unknown decision type '{kind}'; one of {', '.join(HITL_DECISIONS)}")
    if kind == "approve":
        return {"action": "approve"}
    if kind == "reject":
        return {"action": "reject", "comment": str(decision.get("message") or "")}
    action = decision.get("edited_action")
    args = action.get("args") if isinstance(action, dict) else None
    codes = args.get("codes") if isinstance(args, dict) else None
    if isinstance(codes, str):
        codes = codes.replace(",", " ").split()
    if not isinstance(codes, list) or not all(isinstance(c, str) for c in codes):
        raise UserError(f'an edit decision needs edited_action {{"name": "{HITL_ACTION}", "args": {{"codes": '
                        '[NCodes]}}: the whole new batch')
    if batch is None:
        raise UserError("an edit decision can only be read against the paused batch")
    codes = list(dict.fromkeys(c.strip() for c in codes if c.strip()))
    drop = [c for c in batch if c not in codes]
    add = [c for c in codes if c not in batch]
    if not drop and not add:
        return {"action": "approve"}  # the batch as it was
    return {"action": "edit", "drop": drop, "add": add}


def parse_reply(raw: Any, batch: list[str] | None = None) -> Reply:
    """A person's answer as a :class:`Reply`; a malformed one is a one-line :class:`UserError`.

    ``batch`` (the paused batch) is needed to read a LangChain edit decision, which names the new batch.
    """
    if isinstance(raw, str):
        raw = {"action": raw.strip().lower()}
    if isinstance(raw, dict) and "decisions" in raw:
        raw = from_decisions(raw, batch)
    if not isinstance(raw, dict):
        raise UserError(f"an approval reply must be a string or an object, not {type(raw).__name__}; {REPLY_HELP}")
    action = str(raw.get("action") or raw.get("decision") or "").strip().lower()
    if action not in ACTIONS:
        raise UserError(f"unknown approval action '{action}'; {REPLY_HELP}")
    unknown = set(raw) - {"action", "decision", "drop", "add", "comment"}
    if unknown:
        raise UserError(f"unknown field(s) {', '.join(sorted(unknown))} in the approval reply; {REPLY_HELP}")

    def codes(key: str) -> tuple[str, ...]:
        value = raw.get(key) or []
        if isinstance(value, str):
            value = value.replace(",", " ").split()
        if not isinstance(value, (list, tuple)) or not all(isinstance(c, str) for c in value):
            raise UserError(f"'{key}' must be a list of NCode strings; {REPLY_HELP}")
        return tuple(dict.fromkeys(c.strip() for c in value if c.strip()))

    comment = str(raw.get("comment") or "").strip()
    if action == "edit":
        drop, add = codes("drop"), codes("add")
        if not drop and not add:
            raise UserError("an edit must drop or add at least one code; to keep the batch as it is, approve it")
        return Reply("edit", drop, add, comment[:1000])
    if action == "reject":
        return Reply("reject", comment=comment[:1000])
    return Reply("approve", comment=comment[:1000])


def apply_edit(batch: list[str], reply: Reply, *, checker: Any, evaluated: Any, budget_left: int) -> list[str]:
    """The batch after ``reply``'s edit; a refused edit is a one-line :class:`UserError`, the batch unchanged."""
    unknown = [c for c in reply.drop if c not in batch]
    if unknown:
        raise UserError(f"cannot drop {', '.join(unknown)}: not in this batch ({', '.join(batch)}); "
                        "the pause stays open, reply again")
    kept = [c for c in batch if c not in reply.drop]
    for code in reply.add:
        if code in kept:
            continue
        problems = checker.problems(code)
        if problems:
            raise UserError(f"cannot add '{code}': {'; '.join(p.message for p in problems)}; "
                            "the pause stays open, reply again with a legal code")
        if code in evaluated:
            raise UserError(f"cannot add '{code}': it was already evaluated in this run; "
                            "the pause stays open, reply again")
        kept.append(code)
    if not kept:
        raise UserError("the edit leaves no architecture to evaluate; reject the batch instead "
                        "(with a comment for the Navigator), the pause stays open")
    if len(kept) > budget_left:
        raise UserError(f"the edited batch holds {len(kept)} architectures but only {budget_left} of the budget "
                        "are left; drop some, the pause stays open")
    return kept


@dataclass
class CostEstimate:
    """Estimated evaluation seconds per candidate (None where nothing is known)."""

    per_code: dict[str, float | None] = field(default_factory=dict)
    source: str = ""

    @property
    def total(self) -> float | None:
        values = list(self.per_code.values())
        if not values or any(v is None for v in values):
            return None
        return float(sum(values))  # type: ignore[arg-type]


def cost_seconds(cost: dict[str, float]) -> float | None:
    """Seconds of a cost record: its ``*_s`` figures added up."""
    parts = [float(v) for k, v in cost.items() if k.endswith("_s") and isinstance(v, (int, float)) and math.isfinite(v)]
    return sum(parts) if parts else None


def estimate_costs(batch: list[str], evaluator: Any, trials: Any) -> CostEstimate:
    """The evaluator's own estimate where it has one, else the run's mean measured seconds per trial."""
    out = CostEstimate(source="evaluator estimate")
    measured = [s for s in (cost_seconds(t.cost) for t in trials if t.cost) if s is not None]
    mean = sum(measured) / len(measured) if measured else None
    used_mean = False
    for code in batch:
        own = cost_seconds(evaluator.estimate_cost(code) or {})
        if own is None:
            own, used_mean = mean, True
        out.per_code[code] = own
    if used_mean:
        out.source = (f"mean of this run's {len(measured)} evaluations" if measured
                      else "unknown until the first evaluation")
    return out


def needs_approval(mode: str, threshold_s: float | None, estimate: CostEstimate) -> str | None:
    """Why this batch must be approved, or None."""
    if mode == "every_round":
        return "approval is asked every round"
    if mode == "over_cost":
        total = estimate.total
        if total is None:
            return "the batch's cost is not known yet"
        if threshold_s is None or total > threshold_s:
            return f"estimated cost {total:.1f} s exceeds the threshold {threshold_s or 0:.1f} s"
    return None


def pause_payload(*, run_id: str, round_no: int, batch: list[str], space: Any, checker: Any,
                  strategy: dict[str, Any] | None, estimate: CostEstimate, budget: int, evaluated: int,
                  reason: str, error: str | None = None) -> dict[str, Any]:
    """What a person sees at the pause (JSON-serialisable)."""
    candidates = []
    for code in batch:
        report = checker.report(code)
        try:
            arch = space.format_arch(code)
        except Exception:  # an illegal code has no architecture to show
            arch = None
        candidates.append({
            "ncode": code,
            "arch": arch,
            "decoded": space.decode(code) if report["valid"] else None,
            "valid": report["valid"],
            "problems": [p["message"] for p in report["problems"]],
            "estimated_cost_s": estimate.per_code.get(code),
        })
    shown = strategy_shown(strategy)
    total = estimate.total
    description = "\n".join([
        f"Round {round_no} ({reason}): evaluate {len(batch)} architecture(s); {budget - evaluated} of {budget} "
        f"evaluations left; estimated cost {'unknown' if total is None else f'{total:.3g} s'}.",
        f"Strategy: {(shown or {}).get('summary') or '-'}",
        *(f"- {c['ncode']}: {c['arch'] or '; '.join(c['problems'])}" for c in candidates),
        *([f"Last answer refused: {error}"] if error else []),
    ])
    return {
        "kind": "approval",
        "run_id": run_id,
        "round": round_no,
        "reason": reason,
        "strategy": shown,
        "candidates": candidates,
        "estimated_cost_s": estimate.total,
        "cost_source": estimate.source,
        "budget": budget,
        "evaluated": evaluated,
        "budget_left": budget - evaluated,
        "error": error,
        "reply": REPLY_HELP,
        **hitl_request(batch, description),
    }


def strategy_shown(strategy: dict[str, Any] | None) -> dict[str, Any] | None:
    """The Navigator's strategy as a person reads it (its working data left out); None when there is none."""
    if not strategy:
        return None
    return {k: strategy.get(k) for k in ("summary", "patterns", "directions", "constraints", "example_codes")
            if strategy.get(k)} or None
