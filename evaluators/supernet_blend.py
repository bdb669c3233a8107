"""The supernet's accuracy blended with a zero-cost proxy (``--train-option blend=naswot``).

A supernet ranks architectures by their accuracy with inherited weights, a
zero-cost proxy by a score of the untrained network; on the Fashion-MNIST
ground truth the two err differently, and their mean rank ranks better than
either (``benchmarks/fmnist_supernet_tau.py``). A search cannot take ranks
(they depend on which architectures it has seen), so the evaluator puts both
on one scale once: it scores a *reference sample* of architectures (a
seeded draw of ``blend_reference`` legal cells) both ways, keeps each score's
mean and standard deviation, and gives every candidate

    blend = (z(valid_acc) + z(naswot)) / 2,    z(x) = (x - mean) / sd,

the two weighted alike (the weights are not fitted to any ground truth).
A candidate's blend depends on itself and the reference alone, so it is the
same in every run, resumed or not. The reference is measured on the first
evaluation that needs it (its trial's cost holds ``blend_reference_s``) and
kept in a file beside the supernet's cache file, so other searches and
processes with the same supernet and settings reuse it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collm_nas.core.errors import UserError

__all__ = ["BLENDS", "BlendReference", "blend_score", "load_or_measure_reference", "reference_codes",
           "reference_path"]

BLENDS = ("none", "naswot")  # what the supernet's accuracy may be blended with
_FORMAT = 1  # bump when the reference's measurement changes: old files are not reused
_DRAWS = 200  # draws per wanted reference cell before giving up (illegal codes are redrawn)


@dataclass(frozen=True)
class BlendReference:
    """Mean and standard deviation of both scores over the reference sample."""

    codes: tuple[str, ...]
    valid_mean: float
    valid_sd: float
    proxy_mean: float
    proxy_sd: float
    measure_s: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "codes": list(self.codes)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BlendReference:
        return cls(**{**{k: data[k] for k in ("valid_mean", "valid_sd", "proxy_mean", "proxy_sd")},
                      "codes": tuple(data["codes"]), "measure_s": float(data.get("measure_s", 0.0))})


def blend_score(valid_acc: float, proxy: float, ref: BlendReference) -> float:
    """The mean of the two standardised scores (higher is better)."""
    return ((valid_acc - ref.valid_mean) / ref.valid_sd + (proxy - ref.proxy_mean) / ref.proxy_sd) / 2.0


def reference_codes(space: Any, n: int, seed: int) -> list[str]:
    """``n`` distinct legal codes drawn from the space with a seeded stream (the same for every run)."""
    rng = random.Random(f"{seed}/blend-reference")
    codes: list[str] = []
    for _ in range(n * _DRAWS):
        if len(codes) == n:
            break
        code = space.sample(rng)
        if code not in codes and not space.format_problems(code) and not list(space.structural_problems(code)):
            codes.append(code)
    return codes


def _spread(values: list[float], what: str) -> tuple[float, float]:
    sd = statistics.pstdev(values)
    if not sd > 0:
        raise UserError(f"the blend's reference sample gives every cell the same {what}; "
                        "raise the supernet option blend_reference or train the supernet longer")
    return statistics.fmean(values), sd


def reference_path(supernet_path: Path, settings: Mapping[str, Any]) -> Path:
    """The reference's file beside the supernet's cache file, named by what its figures depend on."""
    key = hashlib.sha256(json.dumps({**settings, "format": _FORMAT}, sort_keys=True).encode()).hexdigest()[:12]
    return supernet_path.with_name(f"{supernet_path.stem}.blend-{key}.json")


def load_or_measure_reference(path: Path | None, codes: list[str], valid_acc: Callable[[str], float],
                              proxy: Callable[[str], float]) -> tuple[BlendReference, bool]:
    """The reference from ``path``, else measured now (and written there when ``path`` is given).
    Returns it and whether it was measured here."""
    if path is not None and path.is_file():
        try:
            ref = BlendReference.from_json(json.loads(path.read_text(encoding="utf-8")))
            if list(ref.codes) == codes:
                return ref, False
        except (ValueError, KeyError, TypeError):
            pass  # a damaged or foreign file is measured again and replaced
    if len(codes) < 2:
        raise UserError("the blend's reference needs at least 2 cells; raise the supernet option blend_reference")
    started = time.perf_counter()
    valid = [valid_acc(code) for code in codes]
    scores = [proxy(code) for code in codes]
    ref = BlendReference(tuple(codes), *_spread(valid, "accuracy"), *_spread(scores, "proxy score"),
                         measure_s=time.perf_counter() - started)
    if path is not None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(ref.to_json(), indent=1), encoding="utf-8")
        os.replace(tmp, path)
    return ref, True
