"""User evaluator functions for the CallableEvaluator tests (imported as 'helpers_eval:NAME')."""

from __future__ import annotations

CALLS: list[dict] = []
NOT_A_FUNCTION = 42


def score(arch: dict[str, str]) -> float:
    """Total length of the chosen option names: a deterministic, finite number."""
    CALLS.append(dict(arch))
    return float(sum(len(str(v)) for v in arch.values()))


def score_dict(arch: dict[str, str]) -> dict[str, float]:
    return {"score": float(len(arch)), "params": 1.5}


def boom(arch: dict[str, str]) -> float:
    raise RuntimeError("boom: the user function failed")


def fail_on_attn(arch: dict[str, str]) -> float:
    if arch.get("block") == "attn":
        raise ValueError("attention is not supported")
    return 1.0


def not_finite(arch: dict[str, str]) -> float:
    return float("nan")


def infinite(arch: dict[str, str]) -> float:
    return float("inf")


def returns_none(arch: dict[str, str]):
    return None


def wrong_metric(arch: dict[str, str]) -> dict[str, float]:
    return {"accuracy": 0.5}


def tiny_score(arch: dict[str, str]) -> float:
    """The strategies' tiny two-decision space: a deterministic score."""
    return float(len(arch["a"] + arch["b"])) + (0.5 if arch["a"] == "y" else 0.0)
