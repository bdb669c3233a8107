"""Resource constraints such as ``params_mb<=1.0`` or ``lat_ms_pixel3 < 20``."""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from collm_nas.core.errors import UserError

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
    "==": operator.eq,
}
_EXPR = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(<=|>=|==|<|>)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


@dataclass(frozen=True)
class Constraint:
    resource: str
    op: str
    bound: float

    def holds(self, value: float) -> bool:
        return _OPS[self.op](value, self.bound)

    def __str__(self) -> str:
        return f"{self.resource}{self.op}{self.bound:g}"


def parse_constraint(text: str) -> Constraint:
    m = _EXPR.match(text)
    if not m:
        raise UserError(
            f"bad constraint '{text}'; write RESOURCE OP NUMBER, e.g. params_mb<=1.0 (OP is one of <=, <, >=, >, ==)"
        )
    bound = float(m.group(3))
    if not math.isfinite(bound):
        raise UserError(f"bad constraint '{text}': the bound must be a finite number")
    return Constraint(m.group(1), m.group(2), bound)


def parse_constraints(texts: Iterable[str], known: Iterable[str] | None = None) -> list[Constraint]:
    """Parse expressions and check their resources are known (when ``known`` is given)."""
    parsed = [parse_constraint(t) for t in texts]
    if known is not None:
        names = sorted(set(known))
        for c in parsed:
            if c.resource not in names:
                hint = ", ".join(names) if names else "none (this space and evaluator report no resources)"
                raise UserError(f"unknown resource '{c.resource}' in constraint '{c}'; available: {hint}")
    return parsed


def violated(constraints: Iterable[Constraint], resources: Mapping[str, float]) -> list[str]:
    """Messages for each constraint the resource figures break."""
    out = []
    for c in constraints:
        value = resources.get(c.resource)
        if value is None:
            out.append(f"{c.resource} is unknown for this architecture, so '{c}' cannot be checked")
        elif not c.holds(value):
            out.append(f"{c.resource}={value:.4g} breaks {c}")
    return out
