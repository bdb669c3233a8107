"""A user evaluator with two metrics, one of which it sometimes leaves out (tests/test_multi_objective.py)."""

import zlib


def sometimes_without_cost(arch: dict) -> dict:
    text = ",".join(f"{k}={v}" for k, v in sorted(arch.items()))
    h = zlib.crc32(text.encode())
    out = {"score": h % 1000 / 10.0}
    if h % 3:  # a third of the architectures come back without their cost
        out["cost"] = float(h % 777)
    return out


def sometimes_without_score(arch: dict) -> dict:
    """The searched (first) objective is the one left out."""
    out = sometimes_without_cost(arch)
    return {"score": out["cost"], "cost": out["score"]} if "cost" in out else {"cost": out["score"]}
