"""User evaluators for the parallel-evaluation tests (``--evaluator parallel_evaluator:NAME``, tests/ on PYTHONPATH).

``seeded_score`` draws a random network and input from torch's global
generator (which collm-nas seeds per evaluation), so its result depends on
the seed it ran under. With $PAR_EVAL_LOG set, every call appends
``start PID ARCH`` before it works and ``done PID ARCH`` after, so a test can
count evaluations begun and finished, and find the worker processes.
$PAR_EVAL_SLEEP makes each call take that many seconds, and a fixed third of
the architectures (by a hash of the architecture) $PAR_EVAL_SLOW times as long.
"""

from __future__ import annotations

import os
import random
import time
import zlib

import torch  # imported with the module: collm-nas seeds its generator before each evaluation


def _text(arch: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(arch.items()))


def _log(kind: str, text: str) -> None:
    path = os.environ.get("PAR_EVAL_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(f"{kind} {os.getpid()} {text}\n")


def seeded_score(arch: dict, seed: int) -> dict:
    text = _text(arch)
    _log("start", text)
    pause = float(os.environ.get("PAR_EVAL_SLEEP", "0"))
    if zlib.crc32(text.encode()) % 3 == 0:  # a third of the codes take $PAR_EVAL_SLOW times longer
        pause *= float(os.environ.get("PAR_EVAL_SLOW", "1"))
    time.sleep(pause)
    weights = torch.randn(8, 8)
    inputs = torch.randn(4, 8)
    score = float(torch.tanh(inputs @ weights).sum()) + 0.01 * len(text)
    result = {"score": score, "seed": float(seed), "py_random": random.random()}
    _log("done", text)
    return result


def crash_on_cx(arch: dict, seed: int) -> dict:
    """Kills its own process (as a segfault or the OOM killer would) for the architecture first=c, second=x."""
    if arch.get("first") == "c" and arch.get("second") == "x":
        os._exit(3)
    return seeded_score(arch, seed)


def cuda_devices(arch: dict) -> dict:
    """The GPU the worker was pinned to (-1: none)."""
    return {"score": 1.0, "gpu": float(os.environ.get("CUDA_VISIBLE_DEVICES") or -1)}
